//! `widthlab params`: what a parameterization resolves to for the layers of an MLP.
use widthlab::model::MlpConfig;
use widthlab::param::{OptimizerFamily, Parameterization, BUILTIN};

#[derive(clap::Args, Debug)]
pub struct ParamsArgs {
    /// Parameterizations to show (default: all built-in ones).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Widths to show.
    #[arg(long = "width", default_values_t = [256i64, 1024])]
    pub widths: Vec<i64>,
    /// Number of weight layers.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// Only list the built-in names.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: &ParamsArgs) -> anyhow::Result<()> {
    if args.list {
        println!("{}", BUILTIN.join("\n"));
        return Ok(());
    }
    let names: Vec<String> = if args.params.is_empty() {
        BUILTIN.iter().map(|s| s.to_string()).collect()
    } else {
        args.params.clone()
    };
    println!(
        "{:<18} {:>6} {:<16} {:<12} {:>11} {:>10} {:>11} {:>11}",
        "param", "width", "parameter", "role", "init std", "multiplier", "lr SGD", "lr Adam"
    );
    for name in &names {
        let p = Parameterization::builtin(name)?;
        for &n in &args.widths {
            let cfg = MlpConfig { width: n, depth: args.depth, ..MlpConfig::default() };
            cfg.validate()?;
            for s in cfg.layout() {
                let r = |fam| p.resolve(s.role, s.kind, s.fan_in, s.fan_out, n, fam);
                let (sgd, adam) = (r(OptimizerFamily::Sgd), r(OptimizerFamily::Adam));
                println!(
                    "{:<18} {:>6} {:<16} {:<12} {:>11.4e} {:>10.4} {:>11.4e} {:>11.4e}",
                    name, n, s.name, s.role.to_string(), sgd.init_std, sgd.multiplier, sgd.lr_scale, adam.lr_scale
                );
            }
        }
    }
    Ok(())
}

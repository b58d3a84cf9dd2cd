//! `widthlab params`: what a parameterization resolves to for the layers of an MLP.
use widthlab::param::{builtin_names, table};

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
        builtin_names().for_each(|name| println!("{name}"));
        return Ok(());
    }
    let names: Vec<&str> = if args.params.is_empty() { builtin_names().collect() } else { args.params.iter().map(|s| s.as_str()).collect() };
    print!("{}", table(&names, &args.widths, args.depth)?);
    Ok(())
}

#![doc = include_str!("../docs/extending.md")]
//!
//! (This module has no items: it is the guide, `docs/extending.md`, whose Rust examples run as
//! doctests; the tests below read and train its TOML example.)

#[cfg(test)]
mod tests {
    use crate::model::MlpConfig;
    use crate::param::{Fans, OptimizerFamily, Parameterization};
    use crate::train::{train, Outcome, ParamSpec, TrainConfig};

    #[test]
    fn the_guides_toml_parameterization_is_mup_with_a_readout_rate_of_n_to_the_minus_half() {
        // the guide's ```toml blocks
        let blocks: Vec<&str> = include_str!("../docs/extending.md").split("```toml\n").skip(1).filter_map(|rest| rest.split("\n```").next()).collect();
        assert_eq!(blocks.len(), 1, "one TOML example");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-param.toml");
        std::fs::write(&path, blocks[0]).unwrap();
        // read as the CLI reads `--config`
        let cfg = TrainConfig::from_file(&path).unwrap();
        assert!(matches!(cfg.param, ParamSpec::Inline(_)));
        let p = cfg.parameterization().unwrap();
        assert_eq!(p.name, "mup-slow-readout");
        // every rule is muP's (computed by the built-in), except the readout's SGD rate: n^-1/2
        let mup = Parameterization::mup();
        for n in [64i64, 1024] {
            let model = MlpConfig { width: n, ..cfg.model_config() };
            for s in model.layout() {
                let fans = Fans { fan_in: s.fan_in, fan_out: s.fan_out, width: n, d_out: model.d_out };
                for family in [OptimizerFamily::Sgd, OptimizerFamily::Adam] {
                    let (got, want) = (p.resolve(s.role, s.kind, fans, family), mup.resolve(s.role, s.kind, fans, family));
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
                    assert!(close(got.init_std, want.init_std) && close(got.multiplier, want.multiplier), "{} at {n}", s.name);
                    let ratio = match (s.role, family) {
                        (crate::param::Role::OutputLike, OptimizerFamily::Sgd) => (n as f64).sqrt(),
                        _ => 1.0,
                    };
                    assert!(close(got.lr_scale, want.lr_scale * ratio), "{} {family:?} at {n}: {} vs {}", s.name, got.lr_scale, want.lr_scale);
                }
            }
        }
        // and it trains as written
        let r = train(&cfg, false).unwrap();
        assert_eq!((r.outcome, r.steps, r.parameterization.as_str()), (Outcome::Completed, 20, "mup-slow-readout"));
    }
}

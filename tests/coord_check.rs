//! A real refined coordinate check (Fig. 4 / E.1 of the paper at the quick profile): 3-layer
//! MLP, SGD in SP, CE, eta_n = 1e-4 (n/256)^-1/2, widths 64..1024, 10 steps, 3 seeds.
//! Proposition 4 predicts effective-update exponents -1 (input), 0 (hidden), +1/2 (output).
use widthlab::data::DataConfig;
use widthlab::rcc::runner::{run, CoordCheck, Profile};
use widthlab::rcc::Metric;

#[test]
fn fig4_effective_update_exponents() {
    let cc = CoordCheck::preset("e1", Profile::Quick).unwrap();
    let dir = DataConfig { dataset: cc.train.data.dataset, ..DataConfig::default() }.resolve_dir();
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST not installed at {} (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let res = run(&cc, false).unwrap();
    assert!(res.diverged.is_empty());
    for (layer, want) in [("layers.0.weight", -1.0), ("layers.1.weight", 0.0), ("layers.2.weight", 0.5)] {
        let fit = res.fit(layer, Metric::Effective, cc.steps).unwrap();
        assert!(
            (fit.exponent - want).abs() <= 0.15,
            "{layer}: measured {:.3} (CI {:.3}..{:.3}), predicted {want}",
            fit.exponent,
            fit.ci_low,
            fit.ci_high
        );
    }
}

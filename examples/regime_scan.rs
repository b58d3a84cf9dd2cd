//! Prints the measured phase diagram of SGD in SP (the paper's Fig. 3):
//! `cargo run --release --example regime_scan -- quick`.
use widthlab::rcc::regime::RegimeScan;

fn main() -> anyhow::Result<()> {
    widthlab::device::tune_allocator();
    let profile = std::env::args().nth(1).unwrap_or_else(|| "quick".into()).parse()?;
    let scan = RegimeScan::standard(profile);
    let cells = scan.run(false)?;
    println!("{:>5} {:>5} {:>6} {:>8} {:>8} {:>8}  {:<22} {:<22} diverged", "depth", "loss", "alpha", "d logits", "d acts", "grads", "measured", "predicted");
    let e = |p: &Option<widthlab::fit::PowerLaw>| p.map_or("n/a".to_string(), |f| format!("{:+.2}", f.exponent));
    for c in &cells {
        println!("{:>5} {:>5} {:>6} {:>8} {:>8} {:>8}  {:<22} {:<22} {:?}", c.depth, c.loss.to_string(), c.alpha, e(&c.logits), e(&c.activations), e(&c.gradients), c.measured_regime(0.2).to_string(), scan.predicted(c)?.to_string(), c.diverged_widths);
    }
    Ok(())
}

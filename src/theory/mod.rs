//! Closed forms and predictions from the paper's theory: the 2-layer linear "uv" model of
//! appendix C.4 ([`uv`]), the width-exponent predictions of appendix C.1 ([`predict`]) and
//! the readout's initial operator norm of section 5.2 ([`readout`]).

pub mod predict;
pub mod uv;
pub mod readout;

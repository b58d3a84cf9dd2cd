//! Closed forms and predictions from the paper's theory: the 2-layer linear "uv" model of
//! appendix C.4 and the width-exponent predictions of appendix C.1.

pub mod predict;
pub mod readout;

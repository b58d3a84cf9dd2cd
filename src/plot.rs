//! Figures as SVG (plotters): line plots with optional log axes, dashed reference lines,
//! shaded bands and colour gradients, arranged in panels. `Figure::evcxr_display` shows them
//! inline in the evcxr Jupyter kernel; `save_svg` writes files.
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Style {
    Solid,
    Dashed,
    /// Markers only.
    Points,
}

/// One named curve `(x_i, y_i)`, optionally with a band `[lo_i, hi_i]` around it.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub band: Option<(Vec<f64>, Vec<f64>)>,
    pub style: Style,
    /// RGB colour.
    pub color: (u8, u8, u8),
}

/// A qualitative palette (Tableau 10).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Colour `i` of `n` along a dark-blue -> yellow gradient (for "one line per step").
pub fn gradient(i: usize, n: usize) -> (u8, u8, u8) {
    let t = if n <= 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    (lerp(68.0, 253.0), lerp(1.0, 231.0), lerp(84.0, 37.0))
}

/// One panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    pub size: (u32, u32),
}

impl Figure {
    pub fn new(title: impl Into<String>) -> Self {
        Figure { title: title.into(), x_label: String::new(), y_label: String::new(), log_x: false, log_y: false, series: vec![], size: (520, 380) }
    }
    pub fn x_label(mut self, s: impl Into<String>) -> Self {
        self.x_label = s.into();
        self
    }
    pub fn y_label(mut self, s: impl Into<String>) -> Self {
        self.y_label = s.into();
        self
    }
    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }
    pub fn size(mut self, w: u32, h: u32) -> Self {
        self.size = (w, h);
        self
    }
    /// Adds a solid line with the next palette colour.
    pub fn line(self, name: impl Into<String>, x: Vec<f64>, y: Vec<f64>) -> Self {
        let c = PALETTE[self.series.len() % PALETTE.len()];
        self.series_with(name, x, y, Style::Solid, c)
    }
    /// Adds a series with an explicit style and colour.
    pub fn series_with(mut self, name: impl Into<String>, x: Vec<f64>, y: Vec<f64>, style: Style, color: (u8, u8, u8)) -> Self {
        self.series.push(Series { name: name.into(), x, y, band: None, style, color });
        self
    }
    /// Adds a band `[lo, hi]` to the last series.
    pub fn band(mut self, lo: Vec<f64>, hi: Vec<f64>) -> Self {
        if let Some(s) = self.series.last_mut() {
            s.band = Some((lo, hi));
        }
        self
    }

    /// Points that can be drawn on the axes (finite, and positive on log axes).
    fn usable(&self, x: f64, y: f64) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0)
    }

    fn ranges(&self) -> Result<((f64, f64), (f64, f64))> {
        let mut xs = vec![];
        let mut ys = vec![];
        for s in &self.series {
            for (&x, &y) in s.x.iter().zip(&s.y) {
                if self.usable(x, y) {
                    xs.push(x);
                    ys.push(y);
                }
            }
            if let Some((lo, hi)) = &s.band {
                for (&x, (&l, &h)) in s.x.iter().zip(lo.iter().zip(hi)) {
                    for v in [l, h] {
                        if self.usable(x, v) {
                            ys.push(v);
                        }
                    }
                }
            }
        }
        if xs.is_empty() {
            return Err(Error::config(format!("figure `{}` has no drawable points", self.title)));
        }
        let span = |v: &[f64], log: bool| {
            let (mut lo, mut hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            if log {
                if hi / lo < 1.0001 {
                    lo /= 2.0;
                    hi *= 2.0;
                }
                (lo / 1.2, hi * 1.2)
            } else {
                if (hi - lo).abs() < 1e-300 {
                    lo -= 1.0;
                    hi += 1.0;
                }
                let pad = 0.05 * (hi - lo);
                (lo - pad, hi + pad)
            }
        };
        Ok((span(&xs, self.log_x), span(&ys, self.log_y)))
    }

    fn draw(&self, area: &DrawingArea<SVGBackend, Shift>) -> Result<()> {
        let ((x0, x1), (y0, y1)) = self.ranges()?;
        let err = |e: String| Error::Serde(format!("plot `{}`: {e}", self.title));
        let mut b = ChartBuilder::on(area);
        b.caption(&self.title, ("sans-serif", 16)).margin(8).x_label_area_size(36).y_label_area_size(60);
        // The four axis combinations have different coordinate types.
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart.map_err(|e| err(e.to_string()))?;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .x_labels(6)
                    .y_labels(6)
                    .y_label_formatter(&|v| format!("{v:.2e}"))
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
                for s in &self.series {
                    let color = RGBColor(s.color.0, s.color.1, s.color.2);
                    let pts: Vec<(f64, f64)> = s.x.iter().zip(&s.y).map(|(&x, &y)| (x, y)).filter(|&(x, y)| self.usable(x, y)).collect();
                    if let Some((lo, hi)) = &s.band {
                        let mut poly: Vec<(f64, f64)> = s.x.iter().zip(hi).map(|(&x, &h)| (x, h)).filter(|&(x, y)| self.usable(x, y)).collect();
                        let back: Vec<(f64, f64)> = s.x.iter().zip(lo).map(|(&x, &l)| (x, l)).filter(|&(x, y)| self.usable(x, y)).collect();
                        poly.extend(back.into_iter().rev());
                        if poly.len() >= 3 {
                            chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled()))).map_err(|e| err(e.to_string()))?;
                        }
                    }
                    let drawn = match s.style {
                        Style::Solid => chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(|e| err(e.to_string()))?,
                        Style::Dashed => chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, color.stroke_width(2).into())).map_err(|e| err(e.to_string()))?,
                        Style::Points => chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(e.to_string()))?,
                    };
                    if !s.name.is_empty() {
                        drawn.label(s.name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                    }
                }
                if self.series.iter().any(|s| !s.name.is_empty()) {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK.mix(0.3))
                        .label_font(("sans-serif", 11))
                        .draw()
                        .map_err(|e| err(e.to_string()))?;
                }
            }};
        }
        match (self.log_x, self.log_y) {
            (true, true) => body!(b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())),
            (true, false) => body!(b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)),
            (false, true) => body!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale())),
            (false, false) => body!(b.build_cartesian_2d(x0..x1, y0..y1)),
        }
        Ok(())
    }

    /// Whether any point can be drawn (finite, positive on log axes).
    pub fn is_drawable(&self) -> bool {
        self.ranges().is_ok()
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        Panels::new(vec![self.clone()], 1).to_svg()
    }
    /// Writes the SVG to `path`.
    pub fn save_svg(&self, path: &std::path::Path) -> Result<()> {
        write(path, &self.to_svg()?)
    }
    /// Shows the figure inline in an evcxr notebook.
    pub fn evcxr_display(&self) {
        display_svg(self.to_svg());
    }
}

/// Several figures in a grid of `cols` columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Panels {
    pub figures: Vec<Figure>,
    pub cols: usize,
}

impl Panels {
    pub fn new(figures: Vec<Figure>, cols: usize) -> Self {
        Panels { figures, cols: cols.max(1) }
    }
    pub fn to_svg(&self) -> Result<String> {
        if self.figures.is_empty() {
            return Err(Error::config("no figures to draw"));
        }
        let cols = self.cols.min(self.figures.len());
        let rows = self.figures.len().div_ceil(cols);
        let (w, h) = self.figures[0].size;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w * cols as u32, h * rows as u32)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| Error::Serde(e.to_string()))?;
            for (f, area) in self.figures.iter().zip(root.split_evenly((rows, cols))) {
                f.draw(&area)?;
            }
            root.present().map_err(|e| Error::Serde(e.to_string()))?;
        }
        Ok(svg)
    }
    pub fn save_svg(&self, path: &std::path::Path) -> Result<()> {
        write(path, &self.to_svg()?)
    }
    pub fn evcxr_display(&self) {
        display_svg(self.to_svg());
    }
}

fn write(path: &std::path::Path, svg: &str) -> Result<()> {
    crate::files::write_atomic(path, svg.as_bytes())
}

fn display_svg(svg: Result<String>) {
    match svg {
        Ok(s) => println!("EVCXR_BEGIN_CONTENT image/svg+xml\n{s}\nEVCXR_END_CONTENT"),
        Err(e) => eprintln!("cannot draw: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_log_log_lines_bands_and_legends() {
        let x = vec![64.0, 128.0, 256.0, 512.0];
        let y: Vec<f64> = x.iter().map(|n: &f64| n.powf(-0.5)).collect();
        let f = Figure::new("effective update")
            .x_label("width")
            .y_label("RMS")
            .log_x()
            .log_y()
            .line("input layer", x.clone(), y.clone())
            .band(y.iter().map(|v| v * 0.8).collect(), y.iter().map(|v| v * 1.2).collect())
            .series_with("slope -1/2", x.clone(), y.clone(), Style::Dashed, (0, 0, 0));
        let svg = f.to_svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("input layer") && svg.contains("slope -1/2"));
        assert!(svg.contains("polygon") || svg.contains("<path"), "band drawn");
        let dir = tempfile::tempdir().unwrap();
        f.save_svg(&dir.path().join("a/b.svg")).unwrap();
        let two = Panels::new(vec![f.clone(), f], 2).to_svg().unwrap();
        assert!(two.matches("input layer").count() >= 2);
    }

    #[test]
    fn empty_or_undrawable_figures_are_errors() {
        assert!(Figure::new("empty").to_svg().is_err());
        let f = Figure::new("neg").log_y().line("a", vec![1.0, 2.0], vec![-1.0, 0.0]);
        assert!(f.to_svg().unwrap_err().to_string().contains("no drawable points"));
        assert!(Panels::new(vec![], 2).to_svg().is_err());
        assert_eq!(gradient(0, 5), (68, 1, 84));
        assert_eq!(gradient(4, 5), (253, 231, 37));
    }
}

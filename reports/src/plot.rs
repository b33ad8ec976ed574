//! One SVG plot: a metric against the x axis (CPUs), one line per series (design), the
//! mean of the point's passing runs with an error bar from their minimum to their maximum,
//! a gap where a point has no passing run, and published figures marked.
//!
//! A log2 x axis is drawn as a linear axis over log2(x), labelled with the powers of two;
//! the font is plotters' built-in estimate (no system font is read), so the SVG text is the
//! same on every machine.

use plotters::prelude::*;

/// Colours of the series, in order (Okabe–Ito, distinguishable with colour blindness).
const COLOURS: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// The colour of series number `index`.
pub fn colour(index: usize) -> RGBColor {
    COLOURS[index % COLOURS.len()]
}

/// The figures of one (series, x) point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Passing runs it is over.
    pub runs: usize,
}

/// One line: its points in x order; `None` where no run passed (a gap).
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub series: String,
    pub points: Vec<(f64, Option<Stat>)>,
}

/// A reference drawn on the plot: a cross at (x, y), or a dashed line at y.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub x: Option<f64>,
    pub y: f64,
    pub label: String,
}

/// Everything one SVG shows, in display units.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log2_x: bool,
    pub curves: Vec<Curve>,
    pub references: Vec<Reference>,
}

/// The chart a plot draws into: f64 x (log2(x) on a log2 axis) against f64 y.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

const WIDTH: u32 = 980;
/// Room right of the plot for the legend, so it never covers a line.
const LEGEND_WIDTH: u32 = 200;
const HEIGHT: u32 = 520;

impl Plot {
    /// The plot as SVG text.
    pub fn svg(&self) -> String {
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root).expect("drawing into a string cannot fail");
            root.present().expect("drawing into a string cannot fail");
        }
        text
    }

    fn x_position(&self, x: f64) -> f64 {
        if self.log2_x { x.log2() } else { x }
    }

    /// (x range, y range) covering every point, error bar and reference.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let xs = self.curves.iter().flat_map(|curve| curve.points.iter().map(|(x, _)| self.x_position(*x)));
        let xs: Vec<f64> =
            xs.chain(self.references.iter().filter_map(|r| r.x.map(|x| self.x_position(x)))).collect();
        let (mut x_low, mut x_high) =
            xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if !x_low.is_finite() {
            (x_low, x_high) = (0.0, 1.0);
        }
        if x_high <= x_low {
            (x_low, x_high) = (x_low - 0.5, x_high + 0.5);
        }
        let pad = (x_high - x_low) * 0.04;
        let y_high = self
            .curves
            .iter()
            .flat_map(|curve| curve.points.iter().filter_map(|(_, stat)| stat.map(|stat| stat.max)))
            .chain(self.references.iter().map(|reference| reference.y))
            .fold(0.0f64, f64::max);
        let y_high = if y_high > 0.0 { y_high * 1.08 } else { 1.0 };
        ((x_low - pad, x_high + pad), (0.0, y_high))
    }

    fn draw(
        &self,
        root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        root.fill(&WHITE)?;
        let ((x_low, x_high), (y_low, y_high)) = self.ranges();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(16)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(48)
            .y_label_area_size(78)
            .build_cartesian_2d(x_low..x_high, y_low..y_high)?;
        let log2 = self.log2_x;
        let x_format = move |x: &f64| -> String {
            if !log2 {
                return trim_number(*x);
            }
            let rounded = x.round();
            if (x - rounded).abs() < 1e-9 && rounded >= 0.0 {
                format!("{}", 2f64.powf(rounded) as u64)
            } else {
                String::new()
            }
        };
        let y_format = |y: &f64| trim_number(*y);
        let x_ticks = if log2 { ((x_high - x_low).round() as usize + 1).max(2) } else { 10 };
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(x_ticks)
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        self.draw_curves(&mut chart)?;
        self.draw_references(&mut chart, x_low, x_high)?;
        self.draw_legend(root)?;
        Ok(())
    }

    /// Each series as lines through its means, broken at gaps, with an error bar and a
    /// dot at every point.
    fn draw_curves(&self, chart: &mut Chart<'_, '_>) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        for (index, curve) in self.curves.iter().enumerate() {
            let style = colour(index).stroke_width(2);
            for segment in segments(curve) {
                let line: Vec<(f64, f64)> =
                    segment.iter().map(|(x, stat)| (self.x_position(*x), stat.mean)).collect();
                chart.draw_series(LineSeries::new(line, style))?;
                chart.draw_series(segment.iter().map(|(x, stat)| {
                    ErrorBar::new_vertical(
                        self.x_position(*x),
                        stat.min,
                        stat.mean,
                        stat.max,
                        colour(index).stroke_width(1),
                        8,
                    )
                }))?;
                chart.draw_series(segment.iter().map(|(x, stat)| {
                    Circle::new((self.x_position(*x), stat.mean), 3, colour(index).filled())
                }))?;
            }
        }
        Ok(())
    }

    /// The published figures: a labelled cross where a reference has an x, otherwise a
    /// labelled dashed line across the plot from `x_low` to `x_high`.
    fn draw_references(
        &self,
        chart: &mut Chart<'_, '_>,
        x_low: f64,
        x_high: f64,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        for reference in &self.references {
            let grey = RGBColor(90, 90, 90);
            match reference.x {
                Some(x) => {
                    let at = (self.x_position(x), reference.y);
                    chart.draw_series(std::iter::once(Cross::new(at, 7, grey.stroke_width(2))))?;
                    chart.draw_series(std::iter::once(Text::new(
                        reference.label.clone(),
                        (at.0, reference.y),
                        ("sans-serif", 13).into_font().color(&grey),
                    )))?;
                }
                None => {
                    let line = vec![(x_low, reference.y), (x_high, reference.y)];
                    chart.draw_series(DashedLineSeries::new(line, 6, 4, grey.stroke_width(1)))?;
                    chart.draw_series(std::iter::once(Text::new(
                        reference.label.clone(),
                        (x_low, reference.y),
                        ("sans-serif", 13).into_font().color(&grey),
                    )))?;
                }
            }
        }
        Ok(())
    }

    /// The legend, in the margin right of the plot, so it never covers a line.
    fn draw_legend(
        &self,
        root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        let left = (WIDTH - LEGEND_WIDTH) as i32 + 4;
        for (index, curve) in self.curves.iter().enumerate() {
            let y = 58 + 20 * index as i32;
            root.draw(&PathElement::new(vec![(left, y), (left + 22, y)], colour(index).stroke_width(2)))?;
            root.draw(&Text::new(curve.series.clone(), (left + 28, y - 6), ("sans-serif", 14).into_font()))?;
        }
        Ok(())
    }
}

/// The runs of consecutive points that have figures: a line stops at a gap.
fn segments(curve: &Curve) -> Vec<Vec<(f64, Stat)>> {
    let mut segments = vec![Vec::new()];
    for (x, stat) in &curve.points {
        match stat {
            Some(stat) => segments.last_mut().expect("never empty").push((*x, *stat)),
            None => segments.push(Vec::new()),
        }
    }
    segments.retain(|segment| !segment.is_empty());
    segments
}

/// A tick label: integers plainly, others with up to two decimals.
fn trim_number(value: f64) -> String {
    if value.fract().abs() < 1e-9 && value.abs() < 1e15 {
        return format!("{}", value.round() as i64);
    }
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mean: f64) -> Option<Stat> {
        Some(Stat { mean, min: mean * 0.9, max: mean * 1.1, runs: 3 })
    }

    fn plot() -> Plot {
        Plot {
            title: "contended acquisitions".into(),
            x_label: "CPUs".into(),
            y_label: "contended acquisitions (count)".into(),
            log2_x: true,
            curves: vec![
                Curve {
                    series: "global-lock".into(),
                    points: vec![(1.0, stat(1.0)), (2.0, stat(4.0)), (4.0, stat(9.0))],
                },
                Curve {
                    series: "dec-and-lock".into(),
                    points: vec![(1.0, stat(1.0)), (2.0, None), (4.0, stat(3.0))],
                },
            ],
            references: vec![Reference { x: None, y: 8.0, label: "published: 8".into() }],
        }
    }

    #[test]
    fn a_gap_splits_a_line_and_is_not_drawn_as_zero() {
        let curve = &plot().curves[1];
        let segments = segments(curve);
        assert_eq!(segments.len(), 2);
        assert!(segments.iter().flatten().all(|(_, stat)| stat.mean > 0.0));
    }

    #[test]
    fn the_svg_is_the_same_every_time() {
        assert_eq!(plot().svg(), plot().svg());
    }

    #[test]
    fn log2_ticks_are_powers_of_two() {
        let svg = plot().svg();
        let document = roxmltree::Document::parse(&svg).expect("the SVG is XML");
        let texts: Vec<&str> = document
            .descendants()
            .filter(|node| node.has_tag_name("text"))
            .filter_map(|node| node.text())
            .map(str::trim)
            .collect();
        let x_ticks: Vec<&str> =
            texts.iter().skip_while(|text| **text != "10").skip(1).take(3).copied().collect();
        assert_eq!(x_ticks, ["1", "2", "4"], "the x labels after the y labels 0..10: {texts:?}");
        assert!(texts.contains(&"published: 8"));
    }
}

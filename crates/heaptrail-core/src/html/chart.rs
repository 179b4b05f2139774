//! Line charts of bytes over time, as inline SVG (no script, no library). Colours and fonts come
//! from the page's style sheet through classes; points carry a `<title>` so hovering one shows
//! its window, time and size.

use std::fmt::Write;

use super::escape::{escape, push_escaped};
use super::format::{elapsed, elapsed_on_scale, size};

/// The chart's size in SVG units; the page scales it to its box, so this should be about the
/// box's width in pixels for text to come out at its CSS size.
#[derive(Clone, Copy, Debug)]
pub struct ChartSize {
    pub width: f64,
    pub height: f64,
}

/// A chart in a card of the grid.
pub const CARD: ChartSize = ChartSize {
    width: 520.0,
    height: 200.0,
};
/// A chart across the section.
pub const WIDE: ChartSize = ChartSize {
    width: 1140.0,
    height: 250.0,
};
const LEFT: f64 = 74.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 30.0;
/// Beyond this many points a series is thinned (see [`thin`]).
const MAX_POINTS: usize = 600;
/// Points get hover circles only when a chart has at most this many.
const MAX_MARKED_POINTS: usize = 150;

/// One measurement: seconds since the start of the run, bytes, and its window number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub window: u64,
}

/// A line. `segments` are drawn separately (a site not reported for a while leaves a gap).
pub struct Series {
    pub label: String,
    /// CSS class giving the colour (`stroke`/`fill` from `currentColor`).
    pub class: String,
    pub segments: Vec<Vec<Point>>,
    pub dashed: bool,
    /// Shade the area under the line.
    pub area: bool,
}

/// A vertical line at `x` with a short label (e.g. when a site was first called a leak).
pub struct Marker {
    pub x: f64,
    pub label: String,
    pub class: String,
}

/// A nice step for about `ticks` intervals over `0..max`: 1, 2 or 5 times a power of ten.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Y axis for bytes: `(top of the axis in bytes, tick step in bytes, unit, unit name)`, with
/// ticks at round numbers of KiB/MiB/GiB.
fn byte_axis(max: f64) -> (f64, f64, f64, &'static str) {
    const UNITS: [(f64, &str); 5] = [
        (1.0, "B"),
        (1024.0, "KiB"),
        (1048576.0, "MiB"),
        (1073741824.0, "GiB"),
        (1099511627776.0, "TiB"),
    ];
    let max = max.max(1.0);
    let (unit, name) = UNITS
        .iter()
        .rev()
        .find(|(u, _)| max >= *u)
        .copied()
        .unwrap_or(UNITS[0]);
    let mut step = nice_step(max / unit, 5.0);
    if unit == 1.0 {
        step = step.max(1.0);
    }
    let top = (max / unit / step).ceil().max(1.0) * step;
    (top * unit, step * unit, unit, name)
}

fn byte_tick(value: f64, step: f64, unit: f64, name: &str) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let decimals = if step / unit >= 1.0 {
        0
    } else {
        (-(step / unit).log10()).ceil() as usize
    };
    format!("{:.*} {name}", decimals, value / unit)
}

/// X axis for seconds: tick step.
fn time_step(max: f64) -> f64 {
    const STEPS: [f64; 17] = [
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
        7200.0, 21600.0, 43200.0,
    ];
    STEPS
        .into_iter()
        .find(|s| max / s <= 6.0)
        .unwrap_or_else(|| 86400.0 * nice_step(max / 86400.0, 6.0).max(1.0))
}

/// At most about [`MAX_POINTS`] points with the same shape: in each of `MAX_POINTS / 2` runs of
/// consecutive points, the lowest and the highest (in their order).
fn thin(points: &[Point], budget: usize) -> Vec<Point> {
    if points.len() <= budget {
        return points.to_vec();
    }
    let buckets = (budget / 2).max(1);
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for chunk in points.chunks(per) {
        let lo = chunk
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.y.total_cmp(&b.1.y))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let hi = chunk
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.y.total_cmp(&b.1.y))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let (a, b) = (lo.min(hi), lo.max(hi));
        out.push(chunk[a]);
        if b != a {
            out.push(chunk[b]);
        }
    }
    out
}

/// The chart as an `<svg>` element. `label` describes it for screen readers.
pub fn line_chart(series: &[Series], markers: &[Marker], dims: ChartSize, label: &str) -> String {
    let ChartSize { width, height } = dims;
    let all = || series.iter().flat_map(|s| s.segments.iter().flatten());
    let max_x = all().map(|p| p.x).fold(0.0, f64::max).max(1.0);
    let max_y = all().map(|p| p.y).fold(0.0, f64::max);
    let (top, step, unit, unit_name) = byte_axis(max_y);
    let plot_w = width - LEFT - RIGHT;
    let plot_h = height - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / max_x * plot_w;
    let sy = |y: f64| TOP + plot_h - y / top * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
    // Grid and axes.
    let mut v = 0.0;
    while v <= top * (1.0 + 1e-9) {
        let y = sy(v);
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            byte_tick(v, step, unit, unit_name)
        );
        v += step;
    }
    let xstep = time_step(max_x);
    let mut t = 0.0;
    while t <= max_x * (1.0 + 1e-9) {
        let x = sx(t);
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 4.0,
            TOP + plot_h + 17.0,
            elapsed_on_scale(t, max_x)
        );
        t += xstep;
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        width - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    for m in markers {
        let x = sx(m.x.clamp(0.0, max_x));
        let anchor = if x > LEFT + plot_w * 0.6 {
            "end"
        } else {
            "start"
        };
        let dx = if anchor == "end" { -4.0 } else { 4.0 };
        let _ = write!(
            svg,
            "<g class=\"marker {}\"><line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">",
            escape(&m.class),
            TOP + plot_h,
            x + dx,
            TOP + 10.0
        );
        push_escaped(&mut svg, &m.label);
        svg.push_str("</text></g>");
    }

    let total_points: usize = series
        .iter()
        .flat_map(|s| s.segments.iter().map(Vec::len))
        .sum();
    let mark_points = total_points <= MAX_MARKED_POINTS;
    for s in series {
        let _ = write!(svg, "<g class=\"series {}\">", escape(&s.class));
        for segment in &s.segments {
            let points = thin(segment, MAX_POINTS);
            if points.is_empty() {
                continue;
            }
            let mut d = String::new();
            for (i, p) in points.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { "L" },
                    sx(p.x),
                    sy(p.y)
                );
            }
            if s.area && points.len() > 1 {
                let _ = write!(
                    svg,
                    "<path class=\"area\" d=\"{d}L{:.1},{:.1}L{:.1},{:.1}Z\"/>",
                    sx(points[points.len() - 1].x),
                    sy(0.0),
                    sx(points[0].x),
                    sy(0.0)
                );
            }
            let _ = write!(
                svg,
                "<path class=\"line{}\" d=\"{d}\"/>",
                if s.dashed { " dashed" } else { "" }
            );
            if mark_points || points.len() == 1 {
                for p in &points {
                    let _ = write!(
                        svg,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.6\"><title>",
                        sx(p.x),
                        sy(p.y)
                    );
                    push_escaped(&mut svg, &s.label);
                    let _ = write!(
                        svg,
                        ": {} at {} (window {})</title></circle>",
                        size(p.y),
                        elapsed(p.x),
                        p.window
                    );
                }
            }
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter()
            .enumerate()
            .map(|(i, &(x, y))| Point {
                x,
                y,
                window: i as u64 + 1,
            })
            .collect()
    }

    #[test]
    fn byte_axes_use_round_binary_units() {
        let (top, step, unit, name) = byte_axis(3.5 * 1048576.0);
        assert_eq!((top / unit, step / unit, name), (4.0, 1.0, "MiB"));
        assert_eq!(byte_tick(2.0 * 1048576.0, step, unit, name), "2 MiB");
        assert_eq!(byte_tick(0.0, step, unit, name), "0");
        let (top, step, unit, name) = byte_axis(1.4 * 1048576.0);
        assert_eq!((top / unit, step / unit, name), (1.5, 0.5, "MiB"));
        assert_eq!(byte_tick(0.5 * 1048576.0, step, unit, name), "0.5 MiB");
        let (top, step, _, name) = byte_axis(3.0);
        assert_eq!((top, step, name), (3.0, 1.0, "B"));
        let (top, _, _, name) = byte_axis(0.0);
        assert_eq!((top, name), (1.0, "B"));
        let (top, step, unit, name) = byte_axis(900.0 * 1024.0);
        assert_eq!((top / unit, step / unit, name), (1000.0, 200.0, "KiB"));
    }

    #[test]
    fn time_steps_give_at_most_six_intervals() {
        assert_eq!(time_step(3.0), 0.5);
        assert_eq!(time_step(12.0), 2.0);
        assert_eq!(time_step(100.0), 30.0);
        assert_eq!(time_step(7200.0), 1800.0);
        assert_eq!(time_step(10.0 * 86400.0), 2.0 * 86400.0);
    }

    #[test]
    fn thinning_keeps_extremes_in_order() {
        let p = pts(&(0..1000)
            .map(|i| (i as f64, ((i * 37) % 101) as f64))
            .collect::<Vec<_>>());
        let t = thin(&p, 100);
        assert!(t.len() <= 100);
        assert!(t.windows(2).all(|w| w[0].x < w[1].x));
        assert_eq!(t.iter().map(|p| p.y).fold(0.0, f64::max), 100.0);
        assert_eq!(t.iter().map(|p| p.y).fold(f64::MAX, f64::min), 0.0);
        assert_eq!(thin(&p[..10], 100), p[..10].to_vec());
    }

    #[test]
    fn chart_escapes_labels_and_marks_points() {
        let series = [Series {
            label: "<b>x.py</b>".into(),
            class: "v-leak\"".into(),
            segments: vec![pts(&[(0.0, 10.0), (1.0, 2048.0)]), pts(&[(5.0, 4096.0)])],
            dashed: false,
            area: true,
        }];
        let markers = [Marker {
            x: 1.0,
            label: "leak <since>".into(),
            class: "v-leak".into(),
        }];
        let svg = line_chart(&series, &markers, CARD, "a \"chart\"");
        assert!(svg.starts_with("<svg class=\"chart\""));
        assert!(svg.contains("aria-label=\"a &quot;chart&quot;\""));
        assert!(svg.contains("class=\"series v-leak&quot;\""));
        assert!(svg.contains("&lt;b&gt;x.py&lt;/b&gt;: 2048 B at 1 s (window 2)"));
        assert!(svg.contains("leak &lt;since&gt;"));
        assert!(!svg.contains("<b>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("class=\"line\"").count(), 2);
        assert_eq!(svg.matches("class=\"area\"").count(), 1);
        assert!(svg.contains(">4 KiB</text>"));
    }
}

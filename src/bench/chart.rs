//! A hand-written SVG chart of the ratios (`engine / baseline`), one bar per
//! workload, with the target drawn where the issue sets one.

use super::{Better, Outcome, Target};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the outcomes as an SVG document (skipped workloads are listed
/// without a bar). Bars use a log scale: ratios span several orders of
/// magnitude (a local read is far faster than a PostgreSQL round trip).
pub fn render(outcomes: &[Outcome], title: &str) -> String {
    let row = 26.0;
    let left = 300.0;
    let width = 900.0;
    let plot = width - left - 120.0;
    let top = 60.0;
    let height = top + row * outcomes.len() as f64 + 70.0;
    // log10 axis from 1e-3 to 1e2
    let (lo, hi) = (-3.0f64, 2.0f64);
    let x = |r: f64| left + (r.max(1e-3).log10().clamp(lo, hi) - lo) / (hi - lo) * plot;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="24" text-anchor="middle" font-size="16">{title}</text>
<text x="{cx}" y="42" text-anchor="middle" fill="#555">engine / baseline, log scale (green: higher is better, blue: lower is better; red |: target; black: min–max over the runs)</text>
"##,
        cx = width / 2.0,
        title = esc(title)
    );
    for p in lo as i32..=hi as i32 {
        let xv = x(10f64.powi(p));
        let yb = top + row * outcomes.len() as f64;
        s.push_str(&format!(
            "<line x1=\"{xv:.1}\" y1=\"{top}\" x2=\"{xv:.1}\" y2=\"{yb}\" stroke=\"{}\"/>\n<text x=\"{xv:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            if p == 0 { "#333" } else { "#ddd" },
            yb + 16.0,
            esc(&format!("{}", 10f64.powi(p)))
        ));
    }
    for (i, o) in outcomes.iter().enumerate() {
        let y = top + row * i as f64;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y + 17.0,
            esc(o.name())
        ));
        match o {
            Outcome::Ok(m) => {
                let color = match m.better {
                    Better::Higher => "#4a9",
                    Better::Lower => "#48c",
                };
                let (x0, x1) = (x(1.0), x(m.ratio));
                let (a, b) = if x1 < x0 { (x1, x0) } else { (x0, x1) };
                s.push_str(&format!(
                    "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{:.3}</text>\n",
                    y + 5.0,
                    (b - a).max(1.0),
                    row - 10.0,
                    x(m.ratio).max(x0) + 6.0,
                    y + 17.0,
                    m.ratio
                ));
                if let Some(r) = &m.runs {
                    // The min–max over the runs, as a whisker.
                    let (a, b) = (x(r.ratio.min), x(r.ratio.max));
                    let ym = y + row / 2.0;
                    s.push_str(&format!(
                        "<line x1=\"{a:.1}\" y1=\"{ym:.1}\" x2=\"{b:.1}\" y2=\"{ym:.1}\" stroke=\"#222\"/>\n<line x1=\"{a:.1}\" y1=\"{:.1}\" x2=\"{a:.1}\" y2=\"{:.1}\" stroke=\"#222\"/>\n<line x1=\"{b:.1}\" y1=\"{:.1}\" x2=\"{b:.1}\" y2=\"{:.1}\" stroke=\"#222\"/>\n",
                        ym - 4.0,
                        ym + 4.0,
                        ym - 4.0,
                        ym + 4.0
                    ));
                }
                if let Some(Target::RatioAtLeast(t)) = m.target {
                    let xt = x(t);
                    s.push_str(&format!(
                        "<line x1=\"{xt:.1}\" y1=\"{:.1}\" x2=\"{xt:.1}\" y2=\"{:.1}\" stroke=\"#c33\" stroke-width=\"2\"/>\n",
                        y + 2.0,
                        y + row - 2.0
                    ));
                }
            }
            Outcome::Skipped { .. } => {
                s.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">skipped</text>\n",
                    left + 6.0,
                    y + 17.0
                ));
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// One point of a scaling curve: a workload at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePoint {
    /// The workload's name (one panel per workload).
    pub workload: String,
    /// Changes moved at this size (the x axis, log scale).
    pub changes: u64,
    /// The engine's cost per change in microseconds.
    pub engine_us: f64,
    /// The baseline's cost per change in microseconds.
    pub baseline_us: f64,
}

/// Renders scaling curves (`supamerge bench --scales`): one panel per
/// workload, cost per change (µs, linear axis from 0) against the number of
/// changes (log axis), engine and baseline. A flat line is a cost per
/// change that does not grow with size.
pub fn render_scaling(points: &[ScalePoint], title: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for p in points {
        if !names.contains(&p.workload.as_str()) {
            names.push(&p.workload);
        }
    }
    let (pw, ph) = (300.0f64, 220.0f64);
    let (ml, mt, gap) = (60.0f64, 70.0f64, 40.0f64);
    let width = ml + names.len().max(1) as f64 * (pw + gap) + 20.0;
    let height = mt + ph + 70.0;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="22" text-anchor="middle" font-size="16">{title}</text>
<text x="{cx}" y="40" text-anchor="middle" fill="#555">µs per change (linear, from 0) against changes moved (log); orange: engine, grey: baseline</text>
"##,
        cx = width / 2.0,
        title = esc(title)
    );
    for (i, name) in names.iter().enumerate() {
        let mut pts: Vec<&ScalePoint> = points.iter().filter(|p| p.workload == *name).collect();
        pts.sort_by_key(|p| p.changes);
        let x0 = ml + i as f64 * (pw + gap);
        let ymax = pts
            .iter()
            .map(|p| p.engine_us.max(p.baseline_us))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            let l = (p.changes.max(1) as f64).log10();
            (lo.min(l), hi.max(l))
        });
        let (lo, hi) = if hi > lo {
            (lo - 0.3, hi + 0.3)
        } else {
            (lo - 1.0, lo + 1.0)
        };
        let x = |c: u64| x0 + ((c.max(1) as f64).log10() - lo) / (hi - lo) * pw;
        let y = |v: f64| mt + ph - v / ymax * ph;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n<rect x=\"{x0:.1}\" y=\"{mt:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#999\"/>\n",
            x0 + pw / 2.0,
            mt - 8.0,
            esc(name)
        ));
        for k in 0..=4 {
            let v = ymax / 1.15 * f64::from(k) / 4.0;
            s.push_str(&format!(
                "<line x1=\"{x0:.1}\" y1=\"{yv:.1}\" x2=\"{:.1}\" y2=\"{yv:.1}\" stroke=\"#eee\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>\n",
                x0 + pw,
                x0 - 4.0,
                y(v) + 4.0,
                esc(&super::fmt_num(v)),
                yv = y(v)
            ));
        }
        for (color, get) in [
            (
                "#e80",
                (|p: &ScalePoint| p.engine_us) as fn(&ScalePoint) -> f64,
            ),
            ("#888", |p: &ScalePoint| p.baseline_us),
        ] {
            let line: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.changes), y(get(p))))
                .collect();
            s.push_str(&format!(
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
                line.join(" ")
            ));
            for p in &pts {
                s.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-size=\"10\">{}</text>\n",
                    x(p.changes),
                    y(get(p)),
                    x(p.changes) + 5.0,
                    y(get(p)) - 5.0,
                    esc(&super::fmt_num(get(p)))
                ));
            }
        }
        for p in &pts {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                x(p.changes),
                mt + ph + 16.0,
                esc(&short_count(p.changes))
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">changes</text>\n",
            x0 + pw / 2.0,
            mt + ph + 34.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn short_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

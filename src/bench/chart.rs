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

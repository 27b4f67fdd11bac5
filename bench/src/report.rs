//! The results: one [`Row`] per figure with its baseline and [`Target`], gathered into a
//! [`Report`] that renders as the Markdown table of BENCHMARKS.md and serialises as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::harness::Machine;

/// What a figure should be.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// The ratio to the baseline is at least this.
    RatioAtLeast(f64),
    /// The ratio to the baseline is at most this.
    RatioAtMost(f64),
    /// The ratio to the baseline differs from 1 by at most this fraction.
    RatioWithin(f64),
    /// The value is at most this (in the row's unit).
    AtMost(f64),
    /// The absolute value is below this.
    AbsBelow(f64),
}

impl Target {
    /// Whether `value` (and its `ratio` to the baseline) meets the target; `None` for a
    /// ratio target without a baseline.
    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        Some(match self {
            Target::RatioAtLeast(x) => ratio? >= x,
            Target::RatioAtMost(x) => ratio? <= x,
            Target::RatioWithin(x) => (ratio? - 1.0).abs() <= x,
            Target::AtMost(x) => value <= x,
            Target::AbsBelow(x) => value.abs() < x,
        })
    }

    /// The target as the table's `target` column shows it.
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(x) => format!(">= {x:.2}x"),
            Target::RatioAtMost(x) => format!("<= {x:.2}x"),
            Target::RatioWithin(x) => format!("within {:.0}%", x * 100.0),
            Target::AtMost(x) => format!("<= {} {unit}", number(x)),
            Target::AbsBelow(x) => format!("|t| < {x}"),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    /// Which part of the bench.
    section: &'static str,
    /// What was measured.
    figure: String,
    /// The measurement.
    value: f64,
    /// Its unit.
    unit: &'static str,
    /// The baseline measured in the same run, if the figure has one.
    baseline: Option<f64>,
    /// `value / baseline`.
    ratio: Option<f64>,
    /// What it should be, if the issue sets a target.
    target: Option<Target>,
    /// Whether the target is met.
    pass: Option<bool>,
}

impl Row {
    /// A figure without baseline or target.
    pub(crate) fn new(
        section: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            section,
            figure: figure.into(),
            value,
            unit,
            baseline: None,
            ratio: None,
            target: None,
            pass: None,
        }
    }

    /// Adds the baseline, and with it the ratio and the verdict.
    pub(crate) fn baseline(mut self, baseline: f64) -> Row {
        self.baseline = Some(baseline);
        self.ratio = (baseline != 0.0).then(|| self.value / baseline);
        self.pass = self.target.and_then(|t| t.met(self.value, self.ratio));
        self
    }

    /// Adds the target, and with it the verdict.
    pub(crate) fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self.pass = target.met(self.value, self.ratio);
        self
    }
}

/// Everything measured in one run.
#[derive(Default, Serialize)]
pub(crate) struct Report {
    /// `full` or `short`.
    pub(crate) mode: String,
    /// The daemons' store: `sled` or `postgres`.
    pub(crate) backend: String,
    /// Where it ran.
    pub(crate) machine: Option<Machine>,
    /// How long the run took.
    pub(crate) seconds: f64,
    /// The figures.
    pub(crate) rows: Vec<Row>,
}

impl Report {
    /// The results as a Markdown table, readable in a terminal and ready for BENCHMARKS.md.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.machine {
            let _ = writeln!(
                out,
                "\n{} run on {}, {}: {} cores, {}, Linux {}, {}; load average {} at start, {} at \
                 end; steal {:.1}%; {:.0} s\n",
                self.mode,
                self.backend,
                m.date,
                m.cores,
                m.cpu,
                m.kernel,
                m.rustc,
                m.load_start,
                m.load_end,
                m.steal_percent,
                self.seconds
            );
        }
        let _ = writeln!(
            out,
            "| section | figure | value | baseline | ratio | target | verdict |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} | {} | {} |",
                r.section,
                r.figure,
                number(r.value),
                r.unit,
                r.baseline.map(number).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                r.target.map(|t| t.describe(r.unit)).unwrap_or_default(),
                match r.pass {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "",
                }
            );
        }
        out
    }
}

/// A number with as many digits as it deserves.
fn number(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// 1000 → "1k", 1000000 → "1M".
pub(crate) fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_judge_the_ratio_or_the_value() {
        let row = Row::new("x", "y", 80.0, "calls/s").baseline(100.0);
        assert_eq!(
            row.clone().target(Target::RatioAtLeast(0.8)).pass,
            Some(true)
        );
        assert_eq!(
            row.clone().target(Target::RatioAtLeast(0.9)).pass,
            Some(false)
        );
        assert_eq!(
            row.clone().target(Target::RatioWithin(0.05)).pass,
            Some(false)
        );
        assert_eq!(row.target(Target::AtMost(80.0)).pass, Some(true));
        let t = Row::new("x", "t", -4.6, "").target(Target::AbsBelow(4.5));
        assert_eq!(t.pass, Some(false));
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(count_label(1_000), "1k");
        assert_eq!(count_label(1_000_000), "1M");
        assert_eq!(count_label(1_500), "1500");
    }
}

//! The chart of outcomes and durations: one bar per finished job, oldest
//! on the left, as high as the job took, coloured by how it ended; drawn
//! here as SVG so the page needs no script for it.

use std::fmt::Write as _;

use crate::record::JobRecord;

const WIDTH: u64 = 600;
const HEIGHT: u64 = 120;
/// The most bars drawn.
const BARS: usize = 60;

/// The chart of `jobs` (newest first, as lists are), or a sentence when
/// none has finished.
pub fn outcomes(jobs: &[JobRecord]) -> String {
    let finished: Vec<(&JobRecord, u64)> = jobs
        .iter()
        .filter_map(|j| {
            let took = j.finished_at_ms?.saturating_sub(j.started_at_ms?);
            Some((j, took))
        })
        .take(BARS)
        .collect();
    if finished.is_empty() {
        return "<p>No job has finished yet.</p>".to_owned();
    }
    let longest = finished.iter().map(|(_, t)| *t).max().unwrap_or(1).max(1);
    let step = WIDTH / BARS as u64;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"chart-title\"><title id=\"chart-title\">Outcomes and durations of the last {} finished jobs, oldest on the left; the longest took {:.1} s</title>",
        finished.len(),
        longest as f64 / 1000.0
    );
    for (i, (job, took)) in finished.iter().rev().enumerate() {
        let height = (took * (HEIGHT - 4) / longest).max(2);
        let _ = write!(
            svg,
            "<rect class=\"bar {state}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{height}\"><title>{id}: {state}, {secs:.1} s</title></rect>",
            state = job.state.as_str(),
            x = i as u64 * step,
            y = HEIGHT - height,
            w = step.saturating_sub(2).max(1),
            id = job.id,
            secs = *took as f64 / 1000.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

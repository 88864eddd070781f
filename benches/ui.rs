//! The web page's figures: the bytes of a project page's HTML, of the
//! stylesheet and of the script, and the time to write a project page of
//! 1,000 jobs (median of 50).
//!
//!     cargo bench --bench ui

use std::time::Instant;

use delivery_hook::docker::ComposeTarget;
use delivery_hook::names::{Action, ContainerName};
use delivery_hook::record::{DeployTarget, Deployment, JobRecord, JobState, Requester};

/// Jobs of one service in every final state, newest first.
fn jobs(count: u64) -> Vec<JobRecord> {
    let target = ComposeTarget::from_parts(
        "billing",
        "web",
        "/srv/billing",
        "/srv/billing/compose.yml",
        "",
    )
    .expect("a valid target");
    let deployment = Deployment {
        target: DeployTarget::Compose {
            container: ContainerName::parse("billing-web").expect("a valid name"),
            target,
        },
        pin: None,
        restore: None,
    };
    let finals = [
        JobState::Succeeded,
        JobState::Failed,
        JobState::RolledBack,
        JobState::TimedOut,
    ];
    (0..count)
        .rev()
        .map(|i| {
            let at = 1_700_000_000_000 + i * 60_000;
            let mut job = JobRecord::new("billing", Action::Pull, &deployment, false, at);
            job.state = finals[(i % 4) as usize];
            job.started_at_ms = Some(at + 100);
            job.finished_at_ms = Some(at + 5_000 + (i % 7) * 900);
            job.previous_image = Some(format!("sha256:{:064x}", i));
            job.running_image = Some(format!("sha256:{:064x}", i + 1));
            job.requested_by = Some(Requester::Key { index: 0 });
            job
        })
        .collect()
}

fn main() {
    let (css, script) = delivery_hook::api::ui_assets();
    let served = delivery_hook::api::ui_project_page("billing", &jobs(100));
    println!(
        "page weight: HTML of a project page of 100 jobs (as served) {} bytes; CSS {} bytes; script {} bytes",
        served.len(),
        css.len(),
        script.len()
    );
    let thousand = jobs(1_000);
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..50 {
        let started = Instant::now();
        bytes = delivery_hook::api::ui_project_page("billing", &thousand).len();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "a project page of 1,000 jobs: {bytes} bytes, written in {:.2} ms (median of 50; min {:.2} ms, max {:.2} ms)",
        times[25].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[49].as_secs_f64() * 1000.0
    );
}

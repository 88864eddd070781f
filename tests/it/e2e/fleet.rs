//! A fleet deploy on the real engine: three live gateways, the second of
//! which runs a compose that fails; `trigger` stops there and the third
//! gateway is sent nothing at all.

use std::process::Command;

use serde_json::Value;

use super::*;

/// The operations a gateway's `/metrics` counts requests of, but its
/// health checks and the metrics themselves.
fn operations_served(gateway: &GatewayProcess) -> Vec<String> {
    let metrics = run("curl", &["-sf", &format!("{}/metrics", gateway.url)]);
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("delivery_hook_requests_total{operation=\""))
        .filter_map(|rest| rest.split('"').next())
        .filter(|op| *op != "getHealth" && !op.contains("metrics"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn e2e_a_fleet_deploy_stops_at_the_host_that_failed_and_leaves_the_next_untouched() {
    with_tool(Compose::V2, |tool| async move {
        let f = Fixture::with_registry(tool);
        let repo = f.web_v1_published();
        let container = f.up_web(&repo);
        let v2 = f.push_version(&repo, "v2");
        // Three hosts: each gateway has a state of its own.
        let server = |n: u8| format!("metrics = true\nstate_dir = \"state-{n}\"");
        let first = GatewayProcess::start_with(&f, &server(1), "", "");
        // Its compose is given a file that does not exist: every deploy fails.
        let broken = r#"compose = ["docker", "compose", "--file=/nonexistent/compose.yml"]"#;
        let second = GatewayProcess::start_with(&f, &server(2), broken, "");
        let third = GatewayProcess::start_with(&f, &server(3), "", "");

        let out = Command::new(env!("CARGO_BIN_EXE_delivery-hook"))
            .args(["trigger", "--container", &container, "--wait", "120"])
            .args(["--output", "json"])
            .args([
                "--url",
                &first.url,
                "--url",
                &second.url,
                "--url",
                &third.url,
            ])
            .env("DELIVERY_SECRET", SECRET)
            .output()
            .unwrap();
        let progress = String::from_utf8_lossy(&out.stderr).to_string();
        eprintln!("what the failing pipeline printed:\n{progress}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{progress}\n{}",
            second.log_text()
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let outcomes: Vec<&str> = report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["deployed", "failed", "not_touched"]);
        assert_eq!(report["exit_code"], 1);
        assert_eq!(report["hosts"][1]["job"]["state"], "failed");
        for line in [
            format!("deployed:    {}", first.url),
            format!("failed:      {} (exit 1: job ", second.url),
            format!("not touched: {}", third.url),
        ] {
            assert!(progress.contains(&line), "{line} in:\n{progress}");
        }
        // The first host deployed v2; the second was asked and failed; the
        // third received no request.
        assert_eq!(f.container(&container)["Image"].as_str(), Some(v2.as_str()));
        assert!(operations_served(&first).contains(&"pullContainer".to_owned()));
        assert!(operations_served(&second).contains(&"pullContainer".to_owned()));
        assert_eq!(operations_served(&third), Vec::<String>::new());
    })
    .await;
}

//! Invalid schedule definitions stop the scheduler at start, naming the schedule, the
//! field and the bad value.

use std::time::Duration;

use crate::support::Deployment;

#[tokio::test]
async fn a_bad_zone_or_policy_stops_the_scheduler_naming_the_schedule_and_the_field() {
    let deployment = Deployment::new().await;
    for (field, value) in [
        ("timezone", "Mars/Olympus_Mons"),
        ("catch_up", "sometimes"),
        ("overlap", "queue-one"),
        ("cron", "0 61 * * * *"),
    ] {
        let cron = if field == "cron" {
            value
        } else {
            "0 0 2 * * *"
        };
        let extra = if field == "cron" {
            String::new()
        } else {
            format!("{field} = \"{value}\"\n")
        };
        deployment.write_config(&format!(
            "[[schedules]]\nname = \"nightly\"\ncron = \"{cron}\"\nkind = \"system.ping\"\n{extra}"
        ));
        let finished = deployment.run_command(
            "upkeep-scheduler",
            deployment.command("upkeep-scheduler", [] as [&str; 0]),
            Duration::from_secs(5),
        );
        finished.assert_failure_naming(&["\"nightly\"", &format!(".{field}"), value]);
    }
}

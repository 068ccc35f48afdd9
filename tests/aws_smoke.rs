//! The AWS test ground itself: moto starts, the SDK reaches it through the endpoint override, and
//! the call counter sees every operation.

mod support;

use support::moto;

#[tokio::test]
async fn sdk_reaches_moto_and_calls_are_counted() {
    let c = moto::clients().await;
    let name = format!("/mlobs/smoke/{}", moto::unique("g"));
    c.logs
        .create_log_group()
        .log_group_name(&name)
        .send()
        .await
        .expect("create log group in moto");
    let found = c
        .logs
        .describe_log_groups()
        .log_group_name_prefix(&name)
        .send()
        .await
        .expect("describe");
    assert_eq!(found.log_groups().len(), 1);
    assert_eq!(c.calls.of("CreateLogGroup"), 1);
    assert_eq!(c.calls.of("DescribeLogGroups"), 1);
    assert_eq!(c.calls.mutating(), 1);
    // A failing call is counted as an error, and classified.
    let err = c
        .logs
        .create_log_group()
        .log_group_name(&name)
        .send()
        .await
        .expect_err("duplicate");
    let classified = mlobs::aws::error::classify("CreateLogGroup", &name, err);
    assert_eq!(classified.reason().as_str(), "AwsError", "{classified}");
    assert_eq!(c.calls.count(|k| k.outcome == "error"), 1);
}

#[tokio::test]
async fn crash_injection_refuses_mutating_calls_after_the_budget() {
    let (c, crash) = support::faults::crashing_clients(1).await;
    let a = format!("/mlobs/smoke/{}", moto::unique("crash"));
    c.logs
        .create_log_group()
        .log_group_name(&a)
        .send()
        .await
        .expect("first mutating call passes");
    assert!(!crash.crashed());
    // Reads are never refused.
    c.logs
        .describe_log_groups()
        .log_group_name_prefix(&a)
        .send()
        .await
        .expect("reads pass");
    let err = c.logs.create_log_group().log_group_name(format!("{a}-2")).send().await;
    assert!(err.is_err(), "second mutating call is refused");
    assert!(crash.crashed());
}

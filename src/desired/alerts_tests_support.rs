//! The effective alerts of the built-in defaults, for unit tests of the builders.

use super::monitoring::*;
use crate::desired::effective::{Effective, test_fixture};

pub fn default_alerts() -> EffAlerts {
    EffAlerts {
        rules: vec![
            GpuRule {
                kind: RuleKind::Xid,
                threshold: 0.0,
                minutes: 1,
            },
            GpuRule {
                kind: RuleKind::EccDoubleBit,
                threshold: 0.0,
                minutes: 1,
            },
            GpuRule {
                kind: RuleKind::Temperature,
                threshold: 85.0,
                minutes: 5,
            },
            GpuRule {
                kind: RuleKind::IdleGpu,
                threshold: 5.0,
                minutes: 30,
            },
        ],
        topic: EffTopic::Create {
            name: topic_name("prod-gpu", "team-a", "train"),
        },
        slo: Some(EffSlo {
            objective_percent: 99.9,
        }),
        alarm_dimensions: vec!["k8s.cluster.name".into()],
    }
}

pub fn with_alerts() -> Effective {
    let mut e = test_fixture();
    e.alerts = Some(default_alerts());
    e
}

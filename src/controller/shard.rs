//! Sharding across replicas: `mlobs run --shard I/M` reconciles only the pipelines whose
//! namespace and name hash to shard `I` of `M`, behind its own Lease (one active replica and any
//! number of standbys per shard). Cluster-scoped GpuTelemetryPolicies are reconciled by shard 0
//! only; every shard reads them (a pipeline's effective settings depend on its policy).
//!
//! The hash is FNV-1a (64 bit) of `<namespace>/<name>`, modulo `M`: stable across versions,
//! processes and machines, so `mlobs shard-of` and the chart agree with the running replicas.
//! A pipeline never moves between shards unless `M` changes.

use std::fmt;
use std::str::FromStr;

use kube::ResourceExt;

/// The largest `M`: far beyond what one cluster needs (10,000 pipelines fit in 10 shards).
pub const MAX_SHARDS: u32 = 256;

/// Lease of an unsharded operator (`--shard 0/1`, the default); kept as it was before sharding so
/// an upgrade does not run two leaders side by side.
pub const UNSHARDED_LEASE: &str = "mlobs-operator-leader";

/// Which part of the cluster's pipelines this replica reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

/// FNV-1a, 64 bit: a documented, dependency-free hash whose values never change between releases
/// (std's `DefaultHasher` makes no such promise).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Shard {
    /// The shard (of `count`) that reconciles the pipeline `namespace/name`.
    pub fn of(namespace: &str, name: &str, count: u32) -> u32 {
        let key = format!("{namespace}/{name}");
        // `count` is at least 1 for every parsed Shard; 0 would be a caller's bug, answered with 0.
        u32::try_from(fnv1a(key.as_bytes()) % u64::from(count.max(1))).unwrap_or(0)
    }

    /// Whether this replica reconciles the pipeline `namespace/name`.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        self.count <= 1 || Shard::of(namespace, name, self.count) == self.index
    }

    /// [`Shard::owns`] for an object.
    pub fn owns_obj<K: kube::Resource>(&self, obj: &K) -> bool {
        self.owns(&obj.namespace().unwrap_or_default(), &obj.name_any())
    }

    /// More than one shard.
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// Shard 0 reconciles the cluster-scoped policies (and their Managed DCGM exporters).
    pub fn runs_policies(&self) -> bool {
        self.index == 0
    }

    /// The Lease this shard's replicas compete for. The count is part of the name: while `M`
    /// changes, replicas of the old and the new layout never share a Lease they would read
    /// differently.
    pub fn lease_name(&self) -> String {
        if self.is_sharded() {
            format!("{UNSHARDED_LEASE}-{}-of-{}", self.index, self.count)
        } else {
            UNSHARDED_LEASE.to_string()
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rule = format!("--shard must be I/M with 0 <= I < M <= {MAX_SHARDS} (e.g. 0/3), got {s:?}");
        let (i, m) = s.trim().split_once('/').ok_or_else(|| rule.clone())?;
        let index: u32 = i.trim().parse().map_err(|_| rule.clone())?;
        let count: u32 = m.trim().parse().map_err(|_| rule.clone())?;
        if count == 0 || count > MAX_SHARDS || index >= count {
            return Err(rule);
        }
        Ok(Shard { index, count })
    }
}

/// `mlobs shard-of`: one "NAMESPACE/NAME I/M" line per pipeline. Errors name the argument and
/// the rule.
pub fn shard_of_lines(shards: u32, pipelines: &[String]) -> anyhow::Result<String> {
    if shards == 0 || shards > MAX_SHARDS {
        anyhow::bail!("--shards must be between 1 and {MAX_SHARDS}, got {shards}");
    }
    let mut out = String::new();
    for p in pipelines {
        let Some((ns, name)) = p
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
        else {
            anyhow::bail!("pipeline {p:?} must be NAMESPACE/NAME");
        };
        out.push_str(&format!("{p} {}/{shards}\n", Shard::of(ns, name, shards)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_m_and_names_the_rule_when_it_cannot() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard::default()));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", "0/257", ""] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("--shard must be I/M"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_hash_is_fnv1a_and_stable() {
        // Published FNV-1a 64 test vectors: the shard of a pipeline must never change between
        // releases, so the function is pinned, not just "some hash".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(Shard::of("team-a", "train", 1), 0);
    }

    #[test]
    fn every_pipeline_has_exactly_one_shard_and_shards_are_balanced() {
        let m = 10;
        let shards: Vec<Shard> = (0..m).map(|index| Shard { index, count: m }).collect();
        let mut per = vec![0u32; m as usize];
        for ns in 0..10 {
            for n in 0..1000 {
                let (ns, name) = (format!("team-{ns}"), format!("pipeline-{n}"));
                let owners: Vec<u32> = shards.iter().filter(|s| s.owns(&ns, &name)).map(|s| s.index).collect();
                assert_eq!(owners.len(), 1, "{ns}/{name}: {owners:?}");
                per[owners[0] as usize] += 1;
            }
        }
        // 10,000 pipelines over 10 shards: each within 10 % of 1,000.
        assert!(per.iter().all(|c| (900..=1100).contains(c)), "{per:?}");
    }

    #[test]
    fn shard_of_prints_what_the_replicas_compute_and_rejects_bad_names() {
        let out = shard_of_lines(3, &["team-a/train".into(), "b/x".into()]).unwrap();
        let want = format!(
            "team-a/train {}/3\nb/x {}/3\n",
            Shard::of("team-a", "train", 3),
            Shard::of("b", "x", 3)
        );
        assert_eq!(out, want);
        assert!(
            shard_of_lines(0, &["a/b".into()])
                .unwrap_err()
                .to_string()
                .contains("--shards")
        );
        let err = shard_of_lines(2, &["no-slash".into()]).unwrap_err().to_string();
        assert!(err.contains("NAMESPACE/NAME"), "{err}");
    }

    #[test]
    fn unsharded_keeps_the_old_lease_and_shards_have_their_own() {
        assert_eq!(Shard::default().lease_name(), "mlobs-operator-leader");
        assert!(Shard::default().runs_policies() && !Shard::default().is_sharded());
        let s = Shard { index: 1, count: 3 };
        assert_eq!(s.lease_name(), "mlobs-operator-leader-1-of-3");
        assert!(!s.runs_policies());
        assert_eq!(s.to_string(), "1/3");
    }
}

//! Which collector release a rendered configuration needs, and whether a pinned image has it.
//!
//! mlobs proves its configurations with a real collector: contrib v0.124.1 plus the v0.125.0
//! awscloudwatchlogs change (`../shared/otelcol/otelcol --version` prints `0.124.1-mlobs+cwl0125`).
//! The default image is the first upstream release that contains everything that collector runs.
//! A policy or pipeline may pin another contrib release; one older than a feature the rendered
//! configuration uses is refused with a message naming both, because the collector would
//! otherwise crash-loop on the config (or, worse, ship everything to one stream).

/// A release as `(major, minor, patch)`.
pub type Version = (u32, u32, u32);

/// The pinned default collector image: the first upstream contrib release with every feature in
/// [`FEATURES`], and not older than the collector the tests run.
pub const DEFAULT_COLLECTOR_IMAGE: &str = "otel/opentelemetry-collector-contrib:0.125.0";

/// Repository names whose tags are opentelemetry-collector-contrib release versions. Other
/// distributions (ADOT, custom builds) number their releases differently and are taken as is.
const CONTRIB_REPOSITORIES: [&str; 2] = [
    "otel/opentelemetry-collector-contrib",
    "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib",
];

/// A rendered feature that needs a minimum contrib release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    /// What the user gets, as printed in the refusal.
    pub name: &'static str,
    /// The first contrib release that accepts it.
    pub since: Version,
}

/// One CloudWatch log stream per pod: awscloudwatchlogs `log_stream_name: "{PodName}"`
/// (opentelemetry-collector-contrib PR #37297, released in v0.125.0). Older exporters write the
/// braces literally, so every pod on every node would share one stream named `{PodName}`.
pub const PER_POD_LOG_STREAMS: Feature = Feature {
    name: "per-pod log streams (awscloudwatchlogs log_stream_name \"{PodName}\")",
    since: (0, 125, 0),
};

/// Every feature with a minimum release, for the docs and tests. `Effective::collector_features`
/// says which of them a pipeline's configuration uses.
pub const FEATURES: [Feature; 1] = [PER_POD_LOG_STREAMS];

/// The contrib release of an image, when its repository is a contrib distribution and its tag a
/// version (`0.125.0`, `v0.125.0`, `0.125.0-amd64`, `0.125`, also with a `@sha256:` digest after
/// the tag). None for a digest without a tag, another distribution or a tag that is no version.
pub fn contrib_version(image: &str) -> Option<Version> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let colon = without_digest[slash..].rfind(':').map(|i| slash + i)?;
    let (repository, tag) = (&without_digest[..colon], &without_digest[colon + 1..]);
    let repository = repository.strip_prefix("docker.io/").unwrap_or(repository);
    if !CONTRIB_REPOSITORIES.contains(&repository) {
        return None;
    }
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let numeric = tag.split(['-', '+']).next().unwrap_or(tag);
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = match parts.next() {
        Some(p) => p.ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// `0.125.0`.
pub fn format_version(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// Refuses an image whose contrib release is older than a feature in `features`; the message
/// names the image, its release, the feature and the release the feature needs.
pub fn check_image(image: &str, features: &[Feature]) -> Result<(), String> {
    let Some(version) = contrib_version(image) else {
        return Ok(());
    };
    let missing: Vec<String> = (features.iter())
        .filter(|f| version < f.since)
        .map(|f| format!("{} needs {} or newer", f.name, format_version(f.since)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{image:?} is collector release {}, but the rendered configuration uses {}; pin a newer release (mlobs' default is {DEFAULT_COLLECTOR_IMAGE:?})",
        format_version(version),
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrib_versions_are_read_from_the_tag_of_contrib_repositories_only() {
        let cases = [
            ("otel/opentelemetry-collector-contrib:0.125.0", Some((0, 125, 0))),
            (
                "docker.io/otel/opentelemetry-collector-contrib:v0.124.1",
                Some((0, 124, 1)),
            ),
            ("otel/opentelemetry-collector-contrib:0.130.1-amd64", Some((0, 130, 1))),
            ("otel/opentelemetry-collector-contrib:0.99", Some((0, 99, 0))),
            (
                "otel/opentelemetry-collector-contrib:0.114.0@sha256:0123456789abcdef",
                Some((0, 114, 0)),
            ),
            (
                "ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib:0.126.0",
                Some((0, 126, 0)),
            ),
            ("otel/opentelemetry-collector-contrib@sha256:0123456789abcdef", None),
            ("otel/opentelemetry-collector-contrib:nightly", None),
            ("otel/opentelemetry-collector-contrib:1.2.3.4", None),
            ("public.ecr.aws/aws-observability/aws-otel-collector:v0.43.0", None),
            ("registry.local:5000/otelcol-contrib:0.100.0", None),
        ];
        for (image, want) in cases {
            assert_eq!(contrib_version(image), want, "{image}");
        }
    }

    #[test]
    fn an_older_pinned_release_is_refused_naming_image_feature_and_minimum() {
        let err = check_image("otel/opentelemetry-collector-contrib:0.124.1", &[PER_POD_LOG_STREAMS])
            .expect_err("0.124.1 lacks {PodName}");
        assert!(
            err.contains("\"otel/opentelemetry-collector-contrib:0.124.1\""),
            "{err}"
        );
        assert!(
            err.contains("release 0.124.1") && err.contains("needs 0.125.0 or newer"),
            "{err}"
        );
        assert!(err.contains("{PodName}"), "{err}");
        assert_eq!(
            check_image("otel/opentelemetry-collector-contrib:0.125.0", &[PER_POD_LOG_STREAMS]),
            Ok(())
        );
        assert_eq!(check_image("otel/opentelemetry-collector-contrib:0.114.0", &[]), Ok(()));
        // Another distribution's numbering is not contrib's.
        assert_eq!(
            check_image(
                "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.0",
                &[PER_POD_LOG_STREAMS]
            ),
            Ok(())
        );
    }

    #[test]
    fn the_default_image_has_every_feature_and_is_not_older_than_the_tested_collector() {
        let default = contrib_version(DEFAULT_COLLECTOR_IMAGE).expect("the default is a contrib release");
        assert!(default >= (0, 124, 1), "the tests run 0.124.1");
        for f in FEATURES {
            assert!(default >= f.since, "{}", f.name);
        }
        assert_eq!(check_image(DEFAULT_COLLECTOR_IMAGE, &FEATURES), Ok(()));
    }
}

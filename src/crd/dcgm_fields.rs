//! The DCGM field names mlobs knows, kept as data in `dcgm_fields.txt` (its header names the
//! source and version). Used twice: a CEL rule in both CRDs refuses any other name at admission,
//! and the operator and CLI name the closest known fields when they refuse one.

use std::collections::BTreeSet;
use std::sync::OnceLock;

const DATA: &str = include_str!("dcgm_fields.txt");

/// Every known field name, in the order of `dcgm_fields.txt`.
pub fn known() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        DATA.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `name` is a known DCGM field.
pub fn is_known(name: &str) -> bool {
    static SET: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| known().iter().copied().collect()).contains(name)
}

/// The `n` known names closest to `name` by edit distance (ties in file order).
pub fn closest(name: &str, n: usize) -> Vec<&'static str> {
    let mut scored: Vec<(usize, usize, &'static str)> = known()
        .iter()
        .enumerate()
        .map(|(i, k)| (edit_distance(name, k), i, *k))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, k)| k).collect()
}

/// Levenshtein distance over bytes (field names are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The CEL rule on a list of field names: every entry is a known name. Evaluation cost is
/// bounded by the list's maxItems and the names' maxLength (one comparison per known name).
pub fn cel_rule() -> String {
    let quoted: Vec<String> = known().iter().map(|k| format!("'{k}'")).collect();
    format!("self.all(m, m in [{}])", quoted.join(", "))
}

/// The admission message of [`cel_rule`]. The API server cannot say which entry is wrong;
/// `mlobs plan` and the operator's status name it and the closest known names.
pub const CEL_MESSAGE: &str = "every entry must be a DCGM field name known to mlobs (DCGM 4.x dcgm_fields.h, e.g. DCGM_FI_DEV_GPU_UTIL); `mlobs plan -f <file>` names the unknown entry and the closest known names";

/// The message for one unknown name.
pub fn unknown_message(name: &str) -> String {
    format!(
        "{name:?} is not a DCGM field name; closest known: {}",
        closest(name, 3).join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_the_exporters_csv_names_and_no_range_markers() {
        let names = known();
        assert_eq!(names.len(), 616);
        let unique: BTreeSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names");
        for n in crate::crd::DEFAULT_DCGM_METRICS {
            assert!(is_known(n), "{n}");
        }
        for n in [
            "DCGM_FI_PROF_SM_ACTIVE",
            "DCGM_FI_DRIVER_VERSION",
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        ] {
            assert!(is_known(n), "{n}");
        }
        for n in [
            "DCGM_FI_UNKNOWN",
            "DCGM_FI_FIRST_VGPU_FIELD_ID",
            "DCGM_FI_INTERNAL_FIELDS_0_START",
            "DCGM_FI_NOPE",
        ] {
            assert!(!is_known(n), "{n}");
        }
        assert!(names.iter().all(|n| n.starts_with("DCGM_FI_") && n.len() <= 80));
    }

    #[test]
    fn a_misspelled_name_gets_the_intended_one_first() {
        assert_eq!(closest("DCGM_FI_DEV_GPU_UTILL", 1), ["DCGM_FI_DEV_GPU_UTIL"]);
        assert_eq!(closest("DCGM_FI_PROF_SM_ACTIV", 1), ["DCGM_FI_PROF_SM_ACTIVE"]);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert!(unknown_message("DCGM_FI_DEV_GPU_TMP").contains("closest known: DCGM_FI_DEV_GPU_TEMP"));
    }
}

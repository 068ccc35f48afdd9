//! A checker of Fluent Bit's classic-mode configuration against its documentation (no Fluent Bit
//! binary is installable here): sections, the documented keys of each plugin mlobs renders, and
//! the documented rules. Sources: docs.fluentbit.io, "Configuration file" (SERVICE), "Tail"
//! (INPUT), "Grep" (FILTER), "Amazon Kinesis Data Streams" (OUTPUT). Keys are case-insensitive.

#[rustfmt::skip]
const SERVICE_KEYS: &[&str] = &[
    "flush", "grace", "daemon", "dns.mode", "log_file", "log_level", "parsers_file", "plugins_file",
    "streams_file", "http_server", "http_listen", "http_port", "health_check", "hc_errors_count",
    "hc_retry_failure_count", "hc_period", "coro_stack_size", "scheduler.cap", "scheduler.base",
    "storage.path", "storage.sync", "storage.checksum", "storage.backlog.mem_limit",
    "storage.max_chunks_up", "storage.metrics", "storage.delete_irrecoverable_chunks",
];
#[rustfmt::skip]
const TAIL_KEYS: &[&str] = &[
    "name", "tag", "alias", "path", "path_key", "exclude_path", "offset_key", "read_from_head",
    "refresh_interval", "rotate_wait", "ignore_older", "skip_long_lines", "skip_empty_lines",
    "buffer_chunk_size", "buffer_max_size", "db", "db.sync", "db.locking", "db.journal_mode",
    "mem_buf_limit", "exit_on_eof", "parser", "key", "inotify_watcher", "tag_regex",
    "multiline.parser", "multiline.key_content", "docker_mode", "storage.type",
    "storage.pause_on_chunks_overlimit", "threaded",
];
#[rustfmt::skip]
const GREP_KEYS: &[&str] = &[
    "name", "match", "match_regex", "alias", "regex", "exclude", "logical_op",
];
#[rustfmt::skip]
const KINESIS_KEYS: &[&str] = &[
    "name", "match", "match_regex", "alias", "region", "stream", "role_arn", "time_key",
    "time_key_format", "log_key", "endpoint", "sts_endpoint", "auto_retry_requests", "external_id",
    "profile", "retry_limit", "workers",
];
#[rustfmt::skip]
const MULTILINE_BUILT_INS: &[&str] = &[
    "docker", "cri", "go", "python", "java", "ruby",
];

pub type Section = (String, Vec<(String, String)>);

/// Classic mode: `[SECTION]` headers, then indented `Key Value` lines; `#` starts a comment line.
pub fn parse(text: &str) -> Result<Vec<Section>, String> {
    let mut out: Vec<Section> = vec![];
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if line.starts_with(' ') {
                return Err(at("an indented section header"));
            }
            out.push((name.to_string(), vec![]));
            continue;
        }
        if !line.starts_with("    ") || line.starts_with("     ") {
            return Err(at("an entry must be indented by exactly 4 spaces"));
        }
        let (key, value) = trimmed.split_once(' ').ok_or_else(|| at("a key without a value"))?;
        if value.trim() != value || value.is_empty() {
            return Err(at("a value with surrounding whitespace"));
        }
        let section = out.last_mut().ok_or_else(|| at("an entry before any section"))?;
        section.1.push((key.to_ascii_lowercase(), value.to_string()));
    }
    Ok(out)
}

pub fn get<'a>(entries: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether a Fluent Bit `Match` pattern (`*` wildcards) matches a tag.
fn tag_matches(pattern: &str, tag: &str) -> bool {
    let re = format!("^{}$", regex::escape(pattern).replace(r"\*", ".*"));
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(tag))
}

/// Every problem with a configuration, per the documented rules.
pub fn problems(text: &str) -> Vec<String> {
    let sections = match parse(text) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut out = vec![];
    let services: Vec<&Section> = sections.iter().filter(|s| s.0 == "SERVICE").collect();
    if services.len() != 1 {
        out.push(format!("{} SERVICE sections", services.len()));
    }
    let storage_path = services.iter().any(|s| !get(&s.1, "storage.path").is_empty());
    let mut tags = vec![];
    let size = regex::Regex::new(r"(?i)^[0-9]+(\.[0-9]+)?[KMG]?B?$").expect("compiles");
    for (name, entries) in &sections {
        let plugin = get(entries, "name").first().copied().unwrap_or_default();
        let known: &[&str] = match (name.as_str(), plugin) {
            ("SERVICE", _) => SERVICE_KEYS,
            ("INPUT", "tail") => TAIL_KEYS,
            ("FILTER", "grep") => GREP_KEYS,
            ("OUTPUT", "kinesis_streams") => KINESIS_KEYS,
            _ => {
                out.push(format!("[{name}] plugin {plugin:?} is not one this check knows"));
                continue;
            }
        };
        for (k, v) in entries {
            if !known.contains(&k.as_str()) {
                out.push(format!("[{name}] {plugin}: unknown key {k}"));
            }
            let repeatable = matches!(k.as_str(), "regex" | "exclude");
            if !repeatable && get(entries, k).len() > 1 {
                out.push(format!("[{name}] {plugin}: {k} repeated"));
            }
            if k == "storage.type" && v == "filesystem" && !storage_path {
                out.push(format!(
                    "[{name}] storage.type filesystem without [SERVICE] storage.path"
                ));
            }
        }
        match plugin {
            "tail" => {
                tags.extend(get(entries, "tag"));
                for p in get(entries, "path").iter().flat_map(|p| p.split(',')) {
                    if !p.starts_with('/') {
                        out.push(format!("tail path {p:?} is not absolute"));
                    }
                }
                for m in get(entries, "mem_buf_limit") {
                    if !size.is_match(m) {
                        out.push(format!("Mem_Buf_Limit {m:?} is not a size"));
                    }
                }
                for p in get(entries, "multiline.parser").iter().flat_map(|p| p.split(',')) {
                    if !MULTILINE_BUILT_INS.contains(&p.trim()) {
                        out.push(format!("multiline.parser {p:?} is not built in"));
                    }
                }
            }
            "grep" => {
                let (regex, exclude) = (get(entries, "regex"), get(entries, "exclude"));
                let op = get(entries, "logical_op");
                if !op.is_empty() && !regex.is_empty() && !exclude.is_empty() {
                    out.push("grep: Logical_Op with both Regex and Exclude rules".into());
                }
                for o in op {
                    if !["and", "or", "legacy"].contains(&o.to_ascii_lowercase().as_str()) {
                        out.push(format!("grep: Logical_Op {o:?}"));
                    }
                }
                for rule in regex.iter().chain(&exclude) {
                    match rule.split_once(' ') {
                        Some((key, re)) if !key.is_empty() => {
                            if let Err(e) = regex::Regex::new(re) {
                                out.push(format!("grep: {re:?} does not compile: {e}"));
                            }
                        }
                        _ => out.push(format!("grep: rule {rule:?} is not `KEY REGEX`")),
                    }
                }
                if regex.is_empty() && exclude.is_empty() {
                    out.push("grep without rules".into());
                }
            }
            "kinesis_streams" => {
                for required in ["region", "stream"] {
                    if get(entries, required).is_empty() {
                        out.push(format!("kinesis_streams without {required}"));
                    }
                }
            }
            _ => {}
        }
        if name == "FILTER" || name == "OUTPUT" {
            let matched = get(entries, "match");
            if matched.len() != 1 {
                out.push(format!("[{name}] {plugin}: {} Match keys", matched.len()));
            }
            // A record of the tail input is tagged `<tag with * expanded by the file path>`.
            let sample: Vec<String> = tags
                .iter()
                .map(|t| t.replace('*', "var.log.containers.x.log"))
                .collect();
            if !matched.iter().all(|m| sample.iter().any(|t| tag_matches(m, t))) {
                out.push(format!(
                    "[{name}] {plugin}: Match {matched:?} matches no input tag {tags:?}"
                ));
            }
        }
    }
    out
}

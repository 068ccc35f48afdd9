//! What the collector's Go parsers accept, where Rust's crates would judge the same text
//! differently: redaction regexes (RE2 in OTTL `replace_pattern`, not Rust `regex`), filelog
//! globs (doublestar) and durations (Go's `time.Duration`). A value that passes mlobs but not the
//! collector crash-loops every collector of the pipeline, so validation refuses it by field.

use regex_syntax::ast::parse::ParserBuilder;
use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassSetBinaryOp, ClassSetItem, ClassUnicode, ClassUnicodeKind, Flag, Flags,
    FlagsItemKind, GroupKind, HexLiteralKind, Literal, LiteralKind, RepetitionKind, RepetitionRange, Visitor,
};

/// The longest Go `time.Duration` in milliseconds (~2562047h47m): longer ones overflow when
/// the collector reads its configuration.
pub const GO_DURATION_MAX_MS: u64 = (i64::MAX / 1_000_000) as u64;

/// Go's `regexp/syntax` limit on repetition counts, also on nested counts multiplied.
const RE2_MAX_REPEAT: u32 = 1000;

/// Unicode general categories as RE2 names them (`\pL`, `\p{Lu}`).
const RE2_CATEGORIES: [&str; 37] = [
    "Any", "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl",
    "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
];

/// Unicode 15.0 scripts, spelled as Go's `unicode.Scripts` (Go 1.21 to 1.24) spells them: RE2
/// matches `\p{...}` names exactly in those versions, where Rust also takes loose spellings,
/// binary properties (`\p{Emoji}`) and newer scripts.
const RE2_SCRIPTS: [&str; 163] = [
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cypro_Minoan",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Old_Uyghur",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangsa",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Toto",
    "Ugaritic",
    "Vai",
    "Vithkuqi",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

/// Why the collector would refuse `pattern` as a regular expression, or `None` when RE2 reads it
/// as Rust's `regex` does. Rust's own parser runs first (its errors say more).
pub fn re2_error(pattern: &str) -> Option<String> {
    if let Err(e) = regex::Regex::new(pattern) {
        let msg = e.to_string();
        return Some(format!(
            "does not compile as an RE2-compatible regular expression: {}",
            msg.lines().last().unwrap_or(&msg).trim()
        ));
    }
    let parsed = ParserBuilder::new().build().parse(pattern);
    let Ok(ast) = parsed else {
        return Some("does not compile as a regular expression".into());
    };
    ast::visit(&ast, Re2Check { pattern })
        .err()
        .map(|e| format!("{e} (RE2 is the collector's regex engine)"))
}

struct Re2Check<'a> {
    pattern: &'a str,
}

impl Re2Check<'_> {
    fn text(&self, span: &ast::Span) -> &str {
        self.pattern.get(span.start.offset..span.end.offset).unwrap_or("")
    }

    fn literal(&self, lit: &Literal) -> Result<(), String> {
        match lit.kind {
            LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong)
            | LiteralKind::HexBrace(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => Err(format!(
                "`{}`: no \\u or \\U escapes in RE2, write \\x{{{:X}}}",
                self.text(&lit.span),
                u32::from(lit.c)
            )),
            _ => Ok(()),
        }
    }

    fn unicode_class(&self, class: &ClassUnicode) -> Result<(), String> {
        let known = match &class.kind {
            ClassUnicodeKind::OneLetter(c) => "CLMNPSZ".contains(*c),
            ClassUnicodeKind::Named(name) => {
                RE2_CATEGORIES.contains(&name.as_str()) || RE2_SCRIPTS.contains(&name.as_str())
            }
            ClassUnicodeKind::NamedValue { .. } => false,
        };
        if known {
            Ok(())
        } else {
            Err(format!(
                "`{}`: RE2 knows only general categories (\\pL, \\p{{Lu}}) and script names spelled exactly (\\p{{Greek}})",
                self.text(&class.span)
            ))
        }
    }

    fn flags(&self, flags: &Flags) -> Result<(), String> {
        for item in &flags.items {
            if let FlagsItemKind::Flag(f @ (Flag::Unicode | Flag::CRLF | Flag::IgnoreWhitespace)) = item.kind {
                let name = match f {
                    Flag::Unicode => 'u',
                    Flag::CRLF => 'R',
                    _ => 'x',
                };
                return Err(format!(
                    "`{}`: RE2 has only the flags i, m, s and U, not {name}",
                    self.text(&flags.span)
                ));
            }
        }
        Ok(())
    }
}

/// The most a counted repetition may repeat, as Go's `repeatIsValid` counts it: nested counts
/// multiply, and a `{0}` hides what it repeats.
fn repeat_is_valid(ast: &Ast, mut budget: u32) -> bool {
    if let Ast::Repetition(r) = ast
        && let RepetitionKind::Range(range) = &r.op.kind
    {
        let m = match *range {
            RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) | RepetitionRange::Bounded(_, n) => n,
        };
        if m == 0 {
            return true;
        }
        if m > budget {
            return false;
        }
        budget /= m;
    }
    match ast {
        Ast::Repetition(r) => repeat_is_valid(&r.ast, budget),
        Ast::Group(g) => repeat_is_valid(&g.ast, budget),
        Ast::Alternation(a) => a.asts.iter().all(|x| repeat_is_valid(x, budget)),
        Ast::Concat(c) => c.asts.iter().all(|x| repeat_is_valid(x, budget)),
        _ => true,
    }
}

impl Visitor for Re2Check<'_> {
    type Output = ();
    type Err = String;

    fn finish(self) -> Result<(), String> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), String> {
        match ast {
            Ast::Literal(lit) => self.literal(lit),
            Ast::ClassUnicode(class) => self.unicode_class(class),
            Ast::Flags(set) => self.flags(&set.flags),
            Ast::Assertion(a) => match a.kind {
                AssertionKind::WordBoundaryStart
                | AssertionKind::WordBoundaryEnd
                | AssertionKind::WordBoundaryStartAngle
                | AssertionKind::WordBoundaryEndAngle
                | AssertionKind::WordBoundaryStartHalf
                | AssertionKind::WordBoundaryEndHalf => Err(format!(
                    "`{}`: RE2 has only \\b and \\B as word boundaries",
                    self.text(&a.span)
                )),
                _ => Ok(()),
            },
            Ast::Group(g) => match &g.kind {
                GroupKind::CaptureName { name, .. }
                    if !name.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Err(format!(
                        "`{}`: RE2 group names are ASCII letters, digits and _",
                        self.text(&name.span)
                    ))
                }
                GroupKind::NonCapturing(flags) => self.flags(flags),
                _ => Ok(()),
            },
            Ast::Repetition(r) => {
                let op = self.text(&r.op.span);
                if matches!(*r.ast, Ast::Repetition(_)) {
                    return Err(format!(
                        "`{}`: RE2 refuses stacked repetition operators; group first, e.g. (?:a*)*",
                        self.text(&r.span)
                    ));
                }
                let RepetitionKind::Range(range) = &r.op.kind else {
                    return Ok(());
                };
                let (min, max) = match *range {
                    RepetitionRange::Exactly(n) => (n, n),
                    RepetitionRange::AtLeast(n) => (n, n),
                    RepetitionRange::Bounded(a, b) => (a, b),
                };
                if op.chars().any(char::is_whitespace) {
                    Err(format!("`{op}`: RE2 reads a count with spaces as literal text"))
                } else if max > RE2_MAX_REPEAT || ((min >= 2 || max >= 2) && !repeat_is_valid(ast, RE2_MAX_REPEAT)) {
                    Err(format!(
                        "`{}`: RE2 repeats at most {RE2_MAX_REPEAT} times, nested counts multiplied",
                        self.text(&r.span)
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
        match item {
            ClassSetItem::Literal(lit) => self.literal(lit),
            ClassSetItem::Range(r) => self.literal(&r.start).and_then(|_| self.literal(&r.end)),
            ClassSetItem::Unicode(class) => self.unicode_class(class),
            ClassSetItem::Bracketed(b) => Err(format!(
                "`{}`: RE2 has no nested classes (it reads [ as a literal inside a class)",
                self.text(&b.span)
            )),
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(&mut self, op: &ClassSetBinaryOp) -> Result<(), String> {
        Err(format!(
            "`{}`: RE2 has no class set operations (&&, --, ~~)",
            self.text(&op.span)
        ))
    }
}

/// Why the collector's filelog receiver would refuse `glob` (doublestar's `ValidatePattern`),
/// or `None`: every `[` needs its `]` (a class is never empty), every `{` its `}`, and a `\`
/// escapes the next character.
pub fn glob_error(glob: &str) -> Option<String> {
    let b = glob.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 1;
                if i >= b.len() {
                    return Some("ends with a lone \\ (escape it as \\\\)".into());
                }
            }
            b'[' => {
                let open = i;
                i += 1;
                if i < b.len() && (b[i] == b'^' || b[i] == b'!') {
                    i += 1;
                }
                if i < b.len() && b[i] == b']' {
                    return Some(format!(
                        "empty character class at byte {open} ([] matches nothing; escape a literal [ as \\[)"
                    ));
                }
                loop {
                    if i >= b.len() {
                        return Some(format!(
                            "the [ at byte {open} is never closed (escape a literal [ as \\[)"
                        ));
                    }
                    match b[i] {
                        b'\\' => i += 1,
                        b']' => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                if depth == 0 {
                    return Some(format!("the }} at byte {i} closes no {{ (escape a literal }} as \\}})"));
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    (depth > 0).then(|| format!("{depth} {{ never closed (escape a literal {{ as \\{{)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by tests/otelcol_validate.rs: Rust's `regex` compiled these, the collector refused them
    /// (or, marked *, RE2 compiles them with another meaning, e.g. `\<` is a literal `<`).
    const RUST_ONLY: &[&str] = &[
        r"\u{e9}",
        r"a\u00e9",
        r"[\u{41}-\u{5A}]",
        r"\U0001F680",
        "(?x)a b",
        "(?u)a",
        "(?-u:a)",
        "(?R)a",
        "a{1001}",
        "a{2,1001}",
        "(a{100}){11}",
        "(a{2}){1000}",
        "((a{10}){10}){11}",
        "a**",
        "a*+",
        "a{2}{3}",
        "a+??",
        "(?P<a.b>x)",
        "(?P<é>x)",
        r"\p{Emoji}",
        r"\p{Alphabetic}",
        r"\p{White_Space}",
        r"\p{XID_Start}",
        r"\p{Zyyy}",
        r"\p{Grek}",
        r"\p{sc=Greek}",
        r"\p{Script=Greek}",
        r"\p{gc=L}",
        r"[\p{Emoji}a]",
        r"\p{Garay}",
        r"\b{start}*",
        r"\<a\>*",
        "[a-z&&[^aeiou]]*",
        "[[a-z]]*",
        "[a--b]",
        "[a~~b]*",
        "a{ 2 }*",
    ];

    /// Accepted by both, with the same meaning.
    const BOTH: &[&str] = &[
        "Bearer [A-Za-z0-9._~+/-]+=*",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
        "customer_id=[0-9]+",
        r"a\x41\x{e9}[\x00-\x{10FFFF}]",
        "(?i)a(?m)^b$(?s).(?U)c*(?i-s:d)",
        "a{1000}",
        "(a{100}){10}",
        "((a{2}){0})",
        "a*?b+?c??",
        "(?:a*)*",
        "(?P<user>[a-z]+)@(?<host>x)(?P<_1>y)",
        r"\pL\pN\p{L}\p{Lu}\PL\p{Any}\p{Greek}\p{Han}\p{Old_Italic}\p{SignWriting}",
        r"[\p{Greek}\d]",
        "[[:alpha:]][[:word:]][[:^digit:]]",
        r"\b\B\A\z^$",
        r"\%\ \-\~\&\/\#\_",
        r"\a\f\t\n\r\v",
        r"\d\s\w\D\S\W[^\n]",
        "price=\"\\$([0-9]+)\"",
        "",
        "a|",
        "()",
    ];

    #[test]
    fn redaction_patterns_re2_refuses_or_reads_otherwise_are_refused_with_the_reason() {
        for p in RUST_ONLY {
            assert!(regex::Regex::new(p).is_ok(), "{p:?}: Rust compiles it");
            let err = re2_error(p).unwrap_or_else(|| panic!("{p:?} passed"));
            assert!(err.contains("RE2"), "{p:?}: {err}");
        }
        assert!(re2_error(r"\u{e9}").is_some_and(|e| e.contains(r"\x{E9}")));
        assert!(re2_error("(unclosed").is_some_and(|e| e.starts_with("does not compile")));
    }

    #[test]
    fn patterns_both_engines_read_alike_are_accepted() {
        for p in BOTH {
            assert_eq!(re2_error(p), None, "{p:?}");
        }
    }

    #[test]
    fn every_re2_class_name_is_one_rust_knows() {
        // Cs (surrogates) is the exception: Rust's regexes match chars, which are never surrogates.
        for name in RE2_CATEGORIES.iter().chain(RE2_SCRIPTS.iter()).filter(|n| **n != "Cs") {
            let p = format!(r"\p{{{name}}}");
            assert_eq!(re2_error(&p), None, "{p}");
        }
    }

    #[test]
    fn globs_filelog_refuses_are_refused() {
        let bad = [
            "[", "[]", "[]]", "[]a]", "[!]", "[!]a]", "[a", "\\", "a\\", "{", "}", "{a", "a}", "[a\\]", "[\\", "{[}",
            "[]-]", "*/\\",
        ];
        for g in bad {
            assert!(glob_error(g).is_some(), "{g:?} passed");
        }
        let good = [
            "/var/log/pods/*/istio-proxy/*.log",
            "[^a]",
            "[!a]",
            "\\*",
            "\\[",
            "{a,b}",
            "{a,{b,c}}",
            "{}",
            "[\\]]",
            "[a-]",
            "[-a]",
            "[z-a]",
            "**",
            "/**/",
            "a**b",
            "[[]",
            "{]}",
            "[{]",
            "[}]",
            "\\{",
            "\\}",
            "é",
            "[é]",
            "a$b",
            "",
        ];
        for g in good {
            assert_eq!(glob_error(g), None, "{g:?}");
        }
    }

    #[test]
    fn the_longest_go_duration_is_about_2562047_hours() {
        assert_eq!(GO_DURATION_MAX_MS, 9_223_372_036_854);
        assert_eq!(
            crate::crd::format_duration_ms(GO_DURATION_MAX_MS),
            "2562047h47m16s854ms"
        );
    }
}

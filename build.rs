//! Links the `mlobs` binary with packed relative relocations (`-z pack-relative-relocs`, DT_RELR)
//! on Linux with glibc. A position-independent executable carries one relocation per pointer in
//! its read-only data; as 24-byte RELA entries they were 1.5 MB of the release binary, which the
//! dynamic loader reads at every start, so they stayed in the operator's resident set. Packed,
//! they are a few KiB. Needs glibc 2.36 or newer where the binary runs (the image's
//! distroless/cc-debian12 has 2.36) and GNU ld 2.38 or lld 15 where it is linked.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bin=mlobs=-Wl,-z,pack-relative-relocs");
    }
}

//! With `MLOBS_PACK_RELOCS=1` (the image build and the scale bench set it), links the `mlobs`
//! binary with packed relative relocations (`-z pack-relative-relocs`, DT_RELR) on Linux with
//! glibc. A position-independent executable carries one relocation per pointer in its read-only
//! data; as 24-byte RELA entries they were 1.5 MB of the release binary, which the dynamic loader
//! reads at every start, so they stayed in the operator's resident set (an idle operator: 18.8 MB
//! resident with them, 16.6 MB packed). Packed, they are 16 KB.
//!
//! Off by default: a packed binary needs glibc 2.36 where it runs (`GLIBC_ABI_DT_RELR`; the
//! image's distroless/cc-debian12 has 2.36), and the CLI (`mlobs render`, `mlobs plan`) must keep
//! running where glibc is older (Amazon Linux 2023 and RHEL 9: 2.34; Ubuntu 22.04: 2.35). Linking
//! needs GNU ld 2.38 or lld 15.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MLOBS_PACK_RELOCS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("MLOBS_PACK_RELOCS") == "1" && var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        println!("cargo:rustc-link-arg-bin=mlobs=-Wl,-z,pack-relative-relocs");
    }
}

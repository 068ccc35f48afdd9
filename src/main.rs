fn main() -> std::process::ExitCode {
    mlobs::cli::main()
}

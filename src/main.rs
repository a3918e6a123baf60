//! The `skiff` binary: see [`skiff::cli`].

fn main() -> std::process::ExitCode {
    skiff::cli::main()
}

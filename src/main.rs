//! The `skiff` binary: see [`skiff::cli`].

/// mimalloc: the API server allocates and frees many small objects per request across worker
/// threads, where glibc's malloc spends a measurable share of the CPU (see BENCHMARKS.md).
/// Built without transparent huge pages (`no_thp`): with them, idle RSS grows by about 16 MiB.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    skiff::cli::main()
}

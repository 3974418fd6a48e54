//! The `strata` binary: every node role and the command-line client.
fn main() -> std::process::ExitCode {
    strata_nodes::run()
}

fn main() {
    std::process::exit(fimfs::cli::main());
}

fn main() {
    println!("fimfs");
}

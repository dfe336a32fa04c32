fn main() {
    println!("ragmap");
}

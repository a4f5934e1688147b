//! The `midge` binary.

fn main() {
    println!("midge: serve is coming");
}

#[runtime::main(entries = "many")]
async fn main() {}

#[runtime::main(threads = 0)]
async fn main() {}

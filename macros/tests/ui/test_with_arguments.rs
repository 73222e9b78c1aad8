#[runtime::test]
async fn takes_an_argument(_x: u32) {}

fn main() {}

#[mitogen::main]
fn main(_router: mitogen::Router) {}

#[mitogen::main]
fn main(router: mitogen::Router) -> Result<(), mitogen::Error> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or("local/local/local".into());
    let start = std::time::Instant::now();
    let ctx = router.connect(target)?;
    println!(
        "{} connected in {:?}, pid {}",
        ctx.name(),
        start.elapsed(),
        ctx.call(mitogen::builtins::getpid, ())?
    );
    let s = std::time::Instant::now();
    for _ in 0..2000 {
        ctx.call(mitogen::builtins::noop, ())?;
    }
    println!("rtt {:?}", s.elapsed() / 2000);
    ctx.shutdown()?;
    Ok(())
}

mod spec;

fn main() {}

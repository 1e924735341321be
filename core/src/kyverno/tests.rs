use super::*;

fn fixture() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/kyverno/require-trusted-registries.yaml");
    std::fs::read_to_string(path).unwrap()
}

fn run(name: &str, text: &str) -> Result<Import, ImportError> {
    import(&[Source { name: name.into(), text: text.into() }])
}

#[test]
fn debug_fixture() {
    let i = run("fixture", &fixture()).unwrap();
    println!("{}", i.policy_yaml);
    println!("{}", i.report.to_text());
}

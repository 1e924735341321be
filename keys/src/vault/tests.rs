use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<VaultConfig, KeyError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    VaultConfig::from_lookup("hashivault://k", &|name| map.get(name).cloned(), &|| None)
}

#[test]
fn configuration_comes_from_cosigns_variables() {
    let c = config(&[
        ("VAULT_ADDR", "https://vault.example:8200/"),
        ("VAULT_TOKEN", "s.secret"),
        ("TRANSIT_SECRET_ENGINE_PATH", "/ci/transit/"),
    ])
    .unwrap();
    assert_eq!(c.addr, "https://vault.example:8200");
    assert_eq!(c.mount, "ci/transit");
    assert!(!format!("{c:?}").contains("s.secret"));
    let c = config(&[
        ("VAULT_ADDR", "http://127.0.0.1:8200"),
        ("VAULT_TOKEN", "t"),
    ])
    .unwrap();
    assert_eq!(c.mount, DEFAULT_TRANSIT_MOUNT);
}

#[test]
fn bad_configuration_is_named() {
    let err = config(&[("VAULT_TOKEN", "t")]).unwrap_err().to_string();
    assert!(err.contains("VAULT_ADDR is not set"), "{err}");
    let err = config(&[("VAULT_ADDR", "https://v:8200")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("VAULT_TOKEN"), "{err}");
    let err = config(&[
        ("VAULT_ADDR", "http://vault.example:8200"),
        ("VAULT_TOKEN", "t"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("clear text"), "{err}");
    let err = config(&[
        ("VAULT_ADDR", "https://v"),
        ("VAULT_TOKEN", "t"),
        ("TRANSIT_SECRET_ENGINE_PATH", "a/../sys"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("TRANSIT_SECRET_ENGINE_PATH"), "{err}");
}

#[test]
fn vault_signatures_decode_and_pin_the_version() {
    assert_eq!(
        decode_vault_signature("vault:v2:AAEC", 2).unwrap(),
        vec![0, 1, 2]
    );
    assert!(decode_vault_signature("vault:v1:AAEC", 2)
        .unwrap_err()
        .contains("version 1"));
    assert!(decode_vault_signature("AAEC", 1).is_err());
    assert!(decode_vault_signature("vault:vx:AAEC", 1).is_err());
    assert!(decode_vault_signature("vault:v1:!!", 1).is_err());
}

#[test]
fn vault_error_lists_are_joined_and_bounded() {
    let json = json!({"errors": ["one", "two\nlines"]});
    assert_eq!(vault_errors(&json), "one; two lines");
    let long = json!({"errors": ["x".repeat(5000)]});
    assert!(vault_errors(&long).len() <= MAX_DETAIL_LEN + 3);
    assert_eq!(vault_errors(&json!({})), "");
}

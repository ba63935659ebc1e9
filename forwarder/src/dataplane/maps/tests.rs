use super::*;

#[test]
fn host_stats_add_field_by_field() {
    let mut a = HostStats {
        packets_to_backend: 1,
        bytes_to_backend: 2,
        packets_to_client: 3,
        bytes_to_client: 4,
        connections: 5,
        drops: [6, 7, 8, 9],
    };
    let b = a;
    add_host_stats(&mut a, &b);
    assert_eq!(
        a,
        HostStats {
            packets_to_backend: 2,
            bytes_to_backend: 4,
            packets_to_client: 6,
            bytes_to_client: 8,
            connections: 10,
            drops: [12, 14, 16, 18],
        }
    );
}

//! Allocates 1 MiB at a time, touching each, forever.
silo_guest_common::hostile_connector!(UnboundedAlloc, |_request| {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
});

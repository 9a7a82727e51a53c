//! Never returns from fetch.
silo_guest_common::hostile_connector!(InfiniteLoop, |_request| {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
});

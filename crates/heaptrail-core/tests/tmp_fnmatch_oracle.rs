// TEMPORARY: differential check against CPython's fnmatch; deleted after running.
use heaptrail_core::fnmatch::Pattern;
#[test]
fn oracle() {
    let text = std::fs::read_to_string("/tmp/fnm/cases.txt").unwrap();
    let mut bad = 0;
    for line in text.lines() {
        let mut it = line.split('\t');
        let (p, s, r) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap() == "1");
        if Pattern::new(p).matches(s) != r {
            bad += 1;
            if bad < 20 { eprintln!("MISMATCH pattern={p:?} name={s:?} python={r}"); }
        }
    }
    assert_eq!(bad, 0);
}

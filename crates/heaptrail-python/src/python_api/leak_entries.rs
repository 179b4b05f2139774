//! The leak grouping and the names of the report's verdicts and patterns, for the watcher.
//! Names are owned by the core (`trend::Verdict`, `leak::LeakPattern`) and exported here, so
//! the Python side never writes its own copy.

use heaptrail_core::leak::{json::group_leaks_json, LeakPattern, PART_OF_LEAK};
use heaptrail_core::sites::SiteRules;
use heaptrail_core::trend::{ProcessVerdict, Verdict};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Groups the watcher's leak candidates by holder (`heaptrail_core::leak::entries`). JSON in
/// (a list of candidates with their heap analyses), JSON out (`{"entries", "assignments"}`).
#[pyfunction]
fn _group_leaks(py: Python<'_>, candidates: &str) -> PyResult<String> {
    let candidates = candidates.to_owned();
    py.detach(move || group_leaks_json(&candidates))
        .map_err(PyValueError::new_err)
}

/// Whether `filename` is the user's code under the watcher's patterns (the rule sites use).
#[pyfunction]
fn _is_user_file(filename: &str, library: Vec<String>, include: Vec<String>, exclude: Vec<String>) -> bool {
    SiteRules::from_patterns(&library, &include, &exclude).is_user_file(filename)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_group_leaks, m)?)?;
    m.add_function(wrap_pyfunction!(_is_user_file, m)?)?;
    let py = m.py();
    // Site verdicts, most severe first, then the verdict of a site grouped under another
    // site's leak entry.
    let mut names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
    names.push(PART_OF_LEAK);
    m.add("SITE_VERDICTS", names)?;
    m.add("LEAK", Verdict::Leak.as_str())?;
    m.add("SUSPECT", Verdict::Suspect.as_str())?;
    m.add("FIXED", Verdict::Fixed.as_str())?;
    m.add("WARMING_UP", Verdict::WarmingUp.as_str())?;
    m.add("PLATEAU", Verdict::Plateau.as_str())?;
    // The pattern of growth that is not a leak (a bounded cache filling up): the watcher
    // reports its sites as warming up, never as a leak.
    m.add("NOT_A_LEAK_PATTERN", LeakPattern::BoundedCache.as_str())?;
    m.add("PART_OF_LEAK", PART_OF_LEAK)?;
    // Verdicts a report lists whatever its `top` limit.
    let always: Vec<&str> = Verdict::ALL
        .iter()
        .filter(|v| v.always_reported())
        .map(|v| v.as_str())
        .collect();
    m.add("ALWAYS_REPORTED", pyo3::types::PyFrozenSet::new(py, &always)?)?;
    m.add(
        "PROCESS_VERDICTS",
        ProcessVerdict::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    )?;
    let patterns = PyDict::new(py);
    for p in LeakPattern::ALL {
        patterns.set_item(p.as_str(), p.hint())?;
    }
    m.add("LEAK_PATTERNS", patterns)?;
    Ok(())
}

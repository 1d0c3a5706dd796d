"""PsychoPy bubbles sessions: window, QUEST, responders and crash-safe data files.

``bubbles run`` (:func:`commands.run.run`) shows bubbled faces, records expression
judgments, adapts the number of bubbles with QUEST and writes every trial to disk as
it ends. The same session runs with a person at the keyboard or with a simulated
observer (``--simulate template|scripted|model``), at a keyboard or in an MRI scanner
(``--scanner``; ``--simulate-scanner`` for tests and demos).

Modules, one topic each:

- :mod:`experiments.config` — the TOML configuration, validated key by key;
- :mod:`experiments.trials` — trial plan, key counterbalancing, stimulus building;
- :mod:`experiments.responders` — who answers: keyboard, scripted, template, model;
- :mod:`experiments.presenter` — what draws: a PsychoPy window (or headless);
- :mod:`experiments.session` — the session flow and QUEST;
- :mod:`experiments.schedule` — a scanner session's timing: onsets per run, run
  length, suitability for single-trial estimation;
- :mod:`experiments.triggers` — where the scanner's triggers come from (the trigger key,
  or a simulated scanner);
- :mod:`experiments.scanner` — the scanner mode: runs paced by the scanner's triggers,
  BIDS events per run;
- :mod:`experiments.datafile` — writing the CSV / centres / sidecar / BIDS files, and
  resume repair (the format and its reader are :mod:`analysis.session_files`).

The command line is :mod:`commands.run`, on top of this package.

PsychoPy is imported only inside functions, when a session starts, so importing this
package (and reading its files) works without it.
"""

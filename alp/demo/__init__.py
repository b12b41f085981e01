"""``alp demo`` (``make demo``): the whole active-learning loop on one machine.

Modules, from the run down:

* :mod:`runner` - the run: options, run folder, data, settings, the embedded AWS, the rounds, the report;
  ``alp demo``'s entry (exit codes, Ctrl-C);
* :mod:`rounds` - one round: uploads -> batcher -> the labeling pipeline -> the training pipeline -> scores;
* :mod:`uploads` - a round's uploads into the embedded AWS and the batcher over their queued events;
* :mod:`pipelines` - a declared pipeline's steps run in this process, each step's output in the round's log;
* :mod:`data` - the synthetic pool and frozen test set, generated once (also for the bench's runs);
* :mod:`embedded` - moto on 127.0.0.1 with the stack's resources, and the mirror that lets a run resume;
* :mod:`state` - the run folder's layout, the flags (``DemoConfig``) and ``state.json``;
* :mod:`sandbox` - the run's environment: every write (cwd, temp files, tool caches) inside its folder;
* :mod:`signals` - SIGTERM as Ctrl-C, and Ctrl-C held while a round is recorded;
* :mod:`console` - the lines and progress bars on the console;
* :mod:`integration` - the seams to the synthetic data, inference, metrics and the pipeline's outputs;
* :mod:`report` - table, plots, overlays, ``report.md``;
* :mod:`strategies` - routing within a human budget (``--human-share``, and ``alp bench active-learning``).

Run folder (default ``./demo-run``)::

    state.json        flags + one record per completed round (rewritten atomically after each round,
                      with aws-mirror/, Ctrl-C held until both are written)
    settings.json     the Settings every step loads (ALP_SETTINGS_URI)
    pool/, test/      the synthetic pool (truth = the simulated workforce's answers) and the frozen test set
    aws-mirror/       the embedded AWS state after the last completed round: bucket objects + registry
    logs/round-N.log  each step's own output
    metrics.jsonl     what the steps publish (ALP_METRICS_LOG)
    ultralytics/, matplotlib/, tmp/, work/   tool config, temp files, bundle cache
    home/             HOME for the libraries that cache under it (onnxruntime, matplotlib)
    report/           report.md and its PNGs

Resume: moto keeps its state in memory, so after every completed round the objects of the stack's
buckets and the model registry are mirrored into ``aws-mirror/``; a re-run starts a fresh moto, uploads
the mirror (before EventBridge is switched on, so no upload event fires twice), re-registers the bundles
in order, and continues with the first round that did not complete. An interrupted round is redone.
"""

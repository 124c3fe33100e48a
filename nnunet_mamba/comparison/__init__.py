"""Side-by-side training of several trainers at an equal budget, through the stock nnU-Net commands, with paired
statistics: :mod:`.runs` (what to train, what is done, the commands), :mod:`.metrics` (nnU-Net's validation
summaries as paired observations), :mod:`.stats` (paired differences), :mod:`.report` (table and plot)."""

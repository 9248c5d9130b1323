"""Review: people compare a challenger's and a champion's answers, and their votes become
results, a promotion decision and the next fine-tuning data.

A round is a folder of the workspace, `review/<round-id>/`: `round.json` (the two models, the
prompts, the answers generated once, each item's blind order) and `votes.sqlite` (the votes, one
row per item and reviewer, committed as they arrive). Closing a round publishes its votes as a
`votes/<fingerprint>` artifact.

    prompts        where a round's prompts come from: held-out chats, an evaluation, a JSONL file
    round          a round's folder read back: its items, its vote store (light: no torch)
    make           making a round: prompts, both models' answers, a blind order per item
    votes          the vote store: validating a vote, recording it, reading them all
    results        win rate with a bootstrap interval, mean ratings, agreement; closing a round
    training_data  a closed round's votes -> DPO pairs and chat examples
    gate           the promotion decision a round's results support: approve, reject or wait
"""

"""Networks: layers, the Sequential chain, losses, the named models, and what inspects them
(summary, state_dict, predict, gradcheck)."""

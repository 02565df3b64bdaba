from omni_jax.rewards import config


def test_reward_defaults_are_the_recipes():
    cfg = config.reward_defaults()
    assert dict(cfg.weights) == {"format": 1.0, "accuracy": 1.0, "people_focus": 1.0}
    assert cfg.format.require_context is True
    assert cfg.judge.enabled is False and cfg.judge.cache_dir == ""
    assert cfg.people_focus.normaliser == 20.0 and cfg.people_focus.missing_think == "zero"
    cats = cfg.people_focus.categories
    assert (cats.people.weight, cats.action.weight, cats.environment.weight) == (1.0, 0.5, -0.3)
    assert "color scheme" in cats.environment.words and "body language" in cats.people.words


def test_defaults_are_fresh_copies():
    a = config.people_focus_defaults()
    a.categories.people.words.append("robot")
    assert "robot" not in config.people_focus_defaults().categories.people.words

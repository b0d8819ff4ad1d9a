from defectkit.cli.train import _figure


def test_undefined_ap_is_printed_not_raised() -> None:
    # NEU-DET validation splits hold defective images only: AP is null in the model card.
    assert _figure(None) == "undefined"
    assert _figure(0.98765) == "0.9877"
    assert _figure(1) == "1.0000"

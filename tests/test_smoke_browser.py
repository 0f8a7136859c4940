"""The headless browser the page and browser-counter tests use starts and runs scripts."""


def test_chromium_renders_a_page_and_runs_its_script(browser):
    browser.get("data:text/html,<h1 id=t>x</h1><script>document.getElementById('t')"
                ".textContent = 'from script'</script>")
    assert browser.find_element("id", "t").text == "from script"

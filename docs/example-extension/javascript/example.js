// Added to the page (in <head>) while the extension is enabled. The page is not built yet
// when this runs: wait for it with onUiLoaded (A1111's hook, which Kiln provides).
onUiLoaded(function () {
    const button = gradioApp().querySelector("#kiln_example_refresh");
    if (button) {
        button.title = "Count the images the frame script has drawn on since Kiln started";
    }
    document.body.dataset.kilnExample = "ready";
});

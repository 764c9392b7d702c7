"mkdocs hooks: every notebook in nbs/ becomes a chapter page (nbs/<name>/), listed in the navigation in order."
import hashlib, shutil
from pathlib import Path
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

NBS = 'nbs'


def chapters(root: Path) -> list[Path]:
    "The chapter notebooks, in file-name order (the book's order)."
    return sorted((root/NBS).glob('[0-9]*.ipynb'))


def package_digest(root: Path) -> str:
    "A short digest of the package's modules: executed chapters import them, so their outputs depend on them too."
    h = hashlib.sha256()
    for f in sorted((root/'mlpipeline').glob('*.py')): h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def cache_per_package(config, root: Path):
    "Point mkdocs-jupyter's cache (keyed on each notebook alone) at a folder per package digest; drop the others."
    plugin = config.plugins.get('mkdocs-jupyter')
    if plugin is None or not plugin.config['cache']: return
    base = root/Path(plugin.config['cache_dir'])
    for old in base.glob('pkg-*'):
        if old.name != f'pkg-{package_digest(root)}': shutil.rmtree(old, ignore_errors=True)
    plugin.config['cache_dir'] = str(base/f'pkg-{package_digest(root)}')


def on_config(config):
    "List the chapters in the navigation, before the API reference; the notebook cache follows the package."
    root = Path(config.config_file_path).parent
    cache_per_package(config, root)
    entries = [f'{NBS}/{p.name}' for p in chapters(root)]
    nav = config.nav
    at = next((i for i, e in enumerate(nav) if 'API reference' in e), len(nav))
    nav.insert(at, {'Chapters': entries})
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which converts every .ipynb it is given
def on_files(files, config):
    "Add the notebooks of nbs/ as if they were docs/nbs/*.ipynb."
    root = Path(config.config_file_path).parent
    for p in chapters(root):
        files.append(File(f'{NBS}/{p.name}', src_dir=str(root), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files

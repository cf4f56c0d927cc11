# Builds a package mirror for the gateway tests: a plain file, a pip simple index with one
# wheel, an npm registry entry with its tarball, a cargo sparse registry with one crate, and a
# bare git repository served by git http-backend (smart HTTP, push allowed) and as files.
# Usage: mirror.py ROOT BASE_URL
import hashlib, io, json, os, sys, tarfile, zipfile, base64, subprocess
root, base = sys.argv[1], sys.argv[2]  # base: http://mirror.test:PORT
os.makedirs(root, exist_ok=True)
def w(rel, data):
    p = os.path.join(root, rel); os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, 'wb').write(data if isinstance(data, bytes) else data.encode())
w('hello.txt', 'hello from the mirror\n')
# pip: a wheel and a simple index
files = {'tinypkg/__init__.py': 'VALUE = 42\n',
         'tinypkg-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n',
         'tinypkg-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\nGenerator: palisade-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
record = ''.join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()},{len(c)}\n" for n, c in files.items())
record += 'tinypkg-1.0.dist-info/RECORD,,\n'
buf = io.BytesIO()
with zipfile.ZipFile(buf, 'w') as z:
    for n, c in files.items(): z.writestr(n, c)
    z.writestr('tinypkg-1.0.dist-info/RECORD', record)
whl = buf.getvalue()
w('packages/tinypkg-1.0-py3-none-any.whl', whl)
w('simple/tinypkg/index.html', f'<html><body><a href="../../packages/tinypkg-1.0-py3-none-any.whl#sha256={hashlib.sha256(whl).hexdigest()}">tinypkg-1.0-py3-none-any.whl</a></body></html>\n')
# npm: metadata and a tarball
def tgz(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w:gz') as t:
        for n, c in members.items():
            data = c.encode(); i = tarfile.TarInfo(n); i.size = len(data); i.mode = 0o644; t.addfile(i, io.BytesIO(data))
    return b.getvalue()
pkg = tgz({'package/package.json': json.dumps({'name': 'tinynpm', 'version': '1.0.0', 'main': 'index.js'}), 'package/index.js': 'module.exports = 42;\n'})
w('tarballs/tinynpm-1.0.0.tgz', pkg)
meta = {'name': 'tinynpm', 'dist-tags': {'latest': '1.0.0'}, 'versions': {'1.0.0': {'name': 'tinynpm', 'version': '1.0.0', 'main': 'index.js',
        'dist': {'tarball': f'{base}/tarballs/tinynpm-1.0.0.tgz', 'shasum': hashlib.sha1(pkg).hexdigest(),
                 'integrity': 'sha512-' + base64.b64encode(hashlib.sha512(pkg).digest()).decode()}}}}
w('tinynpm', json.dumps(meta))
# cargo: a sparse registry
crate = tgz({'tinycrate-0.1.0/Cargo.toml': '[package]\nname = "tinycrate"\nversion = "0.1.0"\nedition = "2021"\n', 'tinycrate-0.1.0/src/lib.rs': 'pub const VALUE: u32 = 42;\n'})
w('crates/tinycrate/0.1.0/download', crate)
w('index/config.json', json.dumps({'dl': f'{base}/crates/{{crate}}/{{version}}/download', 'api': None}))
w('index/ti/ny/tinycrate', json.dumps({'name': 'tinycrate', 'vers': '0.1.0', 'deps': [], 'cksum': hashlib.sha256(crate).hexdigest(), 'features': {}, 'yanked': False}) + '\n')
# git: a bare repository served by git http-backend (smart) and as files (dumb)
src = os.path.join(root, 'src'); os.makedirs(src, exist_ok=True)
g = lambda *a, cwd=src: subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'init.defaultBranch=main', *a], cwd=cwd, check=True, capture_output=True)
g('init', '-q'); open(os.path.join(src, 'README'), 'w').write('from the mirror\n'); g('add', 'README'); g('commit', '-qm', 'first')
g('clone', '-q', '--bare', src, os.path.join(root, 'repo.git'), cwd=root)
g('config', 'http.receivepack', 'true', cwd=os.path.join(root, 'repo.git'))
g('update-server-info', cwd=os.path.join(root, 'repo.git'))
os.makedirs(os.path.join(root, 'cgi-bin'), exist_ok=True)
cgi = os.path.join(root, 'cgi-bin', 'git')
# (Python's CGI server runs scripts as nobody when started as root.)
open(cgi, 'w').write(f'#!/bin/sh\nexport GIT_PROJECT_ROOT={root} GIT_HTTP_EXPORT_ALL=1 GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="*"\nexec git http-backend\n'); os.chmod(cgi, 0o755)
for d, _, fs in os.walk(os.path.join(root, 'repo.git')):
    os.chmod(d, 0o777)
    for f in fs: os.chmod(os.path.join(d, f), 0o666)
